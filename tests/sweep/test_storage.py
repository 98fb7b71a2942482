"""harness.sweep.storage on a real local folder (object stores: tests/test_cluster_processes.py, with moto)."""

from __future__ import annotations

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
