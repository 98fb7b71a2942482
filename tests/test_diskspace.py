"""harness.diskspace on real file systems: free space, the refusal before work, ENOSPC told apart, whole files."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from harness.diskspace import SpaceEstimate, check_space, free_bytes, no_space_detail, write_atomically
from harness.errors import InsufficientSpaceError
from tests.conftest import fill


def test_free_bytes_of_a_path_yet_to_be_made_and_none_for_an_object_store(tmp_path):
    assert free_bytes(tmp_path / "not" / "yet") == free_bytes(tmp_path) > 0
    assert free_bytes("s3://bucket/prefix") is None and free_bytes("gs://b/p") is None
    assert free_bytes(f"file://{tmp_path}") == free_bytes(tmp_path)


def test_work_that_cannot_fit_is_refused_naming_the_place_and_the_estimate(small_filesystem):
    volume = small_filesystem("vol", 1 << 20)
    fits = SpaceEstimate({"a": 1000})
    assert check_space(volume / "out", fits, "--out") > 1000
    big = SpaceEstimate({"checkpoints": 3_000_000, "records": 500_000})
    with pytest.raises(InsufficientSpaceError) as caught:
        check_space(volume / "out", big, "storage")
    message = str(caught.value)
    assert f"storage {volume / 'out'}: needs about 3.5 MB (checkpoints 3.0 MB, records 0.5 MB)" in message
    assert "1.0 MB free" in message
    assert check_space("s3://bucket/x", big, "storage") is None  # no figure to check against


def test_no_space_is_told_apart_wherever_it_is_in_the_chain():
    disk_full = OSError(errno.ENOSPC, "No space left on device", "/vol/st/optuna.db")
    assert no_space_detail(disk_full) == "/vol/st/optuna.db: No space left on device"
    try:
        try:
            raise disk_full
        except OSError as exc:
            raise RuntimeError("checkpoint upload failed") from exc
    except RuntimeError as wrapped:
        assert no_space_detail(wrapped) == "/vol/st/optuna.db: No space left on device"
    # SQLite (through SQLAlchemy and Optuna) says it in words only.
    sqlite_full = sqlite3.OperationalError("database or disk is full")
    assert no_space_detail(RuntimeError("StorageInternalError")) is None
    assert no_space_detail(sqlite_full) == "database or disk is full"
    assert no_space_detail(OSError(errno.EACCES, "Permission denied", "/x")) is None


def test_an_atomic_write_on_a_full_disk_keeps_the_old_file_whole(small_filesystem):
    volume = small_filesystem("vol", 1 << 20)
    target = volume / "sweep.json"
    write_atomically(target, '{"old": true}')
    fill(volume, 4096)
    with pytest.raises(OSError) as caught:
        write_atomically(target, "x" * 200_000)
    assert caught.value.errno == errno.ENOSPC and no_space_detail(caught.value)
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in volume.iterdir()) == ["filler", "sweep.json"]  # no temporary left behind
