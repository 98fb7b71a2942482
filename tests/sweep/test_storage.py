"""harness.sweep.storage on a real local folder (object stores: tests/test_cluster_processes.py, with moto)."""

from __future__ import annotations

import os

import pytest

from harness.errors import ConfigError, StorageError
from harness.sweep.storage import SweepStorage


@pytest.mark.parametrize(
    ("text", "uri"),
    [("s3://bucket/sweeps/x/", "s3://bucket/sweeps/x"), ("gs://b/p", "gs://b/p")],
)
def test_object_store_uris_are_kept(text, uri):
    storage = SweepStorage.parse(text)
    assert storage.uri == uri and storage.remote
    assert storage.study_storage() == f"{uri}/optuna.db"


def test_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("runs/x", f"file://{tmp_path}/runs/x"):
        storage = SweepStorage.parse(text)
        assert storage.uri == str(tmp_path / "runs" / "x") and not storage.remote
        assert storage.study_storage() == f"sqlite:///{tmp_path / 'runs' / 'x' / 'optuna.db'}"


@pytest.mark.parametrize("text", ["ftp://host/x", "hdfs://nn/x", "s3://", "s3://b/p?endpoint_override=x"])
def test_other_schemes_are_bad_input_naming_the_key(text):
    with pytest.raises(ConfigError, match="storage"):
        SweepStorage.parse(text)


def test_json_round_trip_and_check(tmp_path):
    storage = SweepStorage.parse(str(tmp_path / "s"))
    storage.check()
    assert list((tmp_path / "s").iterdir()) == [], "the writability probe is removed"
    assert storage.read_json("sweep.json") is None
    storage.write_json("sweep.json", {"sweep_id": "x"})
    assert storage.read_json("sweep.json") == {"sweep_id": "x"}
    (tmp_path / "s" / "bad.json").write_text("{")
    with pytest.raises(StorageError, match="bad.json"):
        storage.read_json("bad.json")


def test_unwritable_local_storage_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="not writable"):
        SweepStorage.parse(str(tmp_path / "file" / "sub")).check()


def test_a_second_driver_on_the_same_storage_is_refused_and_a_dead_drivers_lock_is_taken_over(
    tmp_path, data_cache_dir, capsys
):
    import signal
    import subprocess
    import sys

    from harness.cli import main
    from tests.conftest import SMOKE, smoke_overrides

    storage = SweepStorage.parse(str(tmp_path / "storage"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom harness.sweep.storage import SweepStorage\n"
         f"with SweepStorage.parse({storage.uri!r}).lock():\n    print('held', flush=True)\n    time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = rf"storage {storage.uri} is in use by another sweep driver \(pid "
        with pytest.raises(StorageError, match=refused), storage.lock():
            pass
        # The command: refused in seconds, before it reads or writes the sweep's state.
        args = ["sweep", str(SMOKE)]
        for override in smoke_overrides(tmp_path, data_cache_dir):
            args += ["--set", override]
        assert main(args) == 4
        err = capsys.readouterr().err
        assert f"is in use by another sweep driver (pid {holder.pid} on " in err and "--storage" in err
        assert not (tmp_path / "storage" / "sweep.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with storage.lock():  # the kernel released the dead driver's lock: taken over, no clean-up needed
        assert f"pid {os.getpid()} on " in (tmp_path / "storage" / ".driver.lock").read_text()
