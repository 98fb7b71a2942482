"""One driver at a time on an object store: the lease, on a real S3-compatible server (moto) in its own process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import StorageError
from harness.sweep.storage import LEASE_FILE, SweepStorage

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 with one bucket; the environment pyarrow and boto3 read points at it."""
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket="sweeps")
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        yield client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def lease_of(client, prefix: str) -> dict | None:
    try:
        return json.loads(client.get_object(Bucket="sweeps", Key=f"{prefix}/{LEASE_FILE}")["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


def test_a_second_driver_is_refused_naming_the_holder_and_the_lease_ends_with_the_first(s3):
    storage = SweepStorage.parse("s3://sweeps/one")
    with storage.lease(ttl_s=1.5, settle_s=0.2):
        held = lease_of(s3, "one")
        assert held is not None and f"pid {os.getpid()}" in held["holder"]
        with pytest.raises(StorageError) as refused, SweepStorage.parse("s3://sweeps/one").lock():
            pass
        message = str(refused.value)
        assert "in use by another sweep driver" in message and f"pid {os.getpid()}" in message
        assert f"it renews its lease s3://sweeps/one/{LEASE_FILE}" in message
    assert lease_of(s3, "one") is None  # released on leaving
    with SweepStorage.parse("s3://sweeps/one").lock():  # and free for the next driver
        pass


def test_the_lease_is_renewed_while_the_driver_runs(s3):
    storage = SweepStorage.parse("s3://sweeps/renewed")
    with storage.lease(ttl_s=1.5, settle_s=0.2):
        first = lease_of(s3, "renewed")["renewed"]
        time.sleep(2.5)  # two renewals at ttl/3; a reader still sees a live lease
        assert lease_of(s3, "renewed")["renewed"] > first
        second = SweepStorage.parse("s3://sweeps/renewed").lease(ttl_s=1.5, settle_s=0.2)
        with pytest.raises(StorageError, match="in use by another sweep driver"), second:
            pass


HOLD = """
import sys, time
from harness.sweep.storage import SweepStorage
with SweepStorage.parse(sys.argv[1]).lease(ttl_s=float(sys.argv[2]), settle_s=0.2):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_sigkilled_drivers_lease_is_taken_over_once_it_is_stale(s3, caplog):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, "s3://sweeps/killed", "3"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        second = SweepStorage.parse("s3://sweeps/killed").lease(settle_s=0.2)
        with pytest.raises(StorageError, match=f"pid {holder.pid}"), second:
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=20)
    # At once: the lease is fresh, so it is watched for its TTL (3 s), not renewed, and taken over.
    started = time.monotonic()
    with (
        caplog.at_level("WARNING", logger="harness.sweep.storage"),
        SweepStorage.parse("s3://sweeps/killed").lease(settle_s=0.2),
    ):
        assert f"pid {os.getpid()}" in lease_of(s3, "killed")["holder"]
    assert time.monotonic() - started < 3 + 5
    assert any("taking over the lease" in r.message and f"pid {holder.pid}" in r.message for r in caplog.records)


def test_of_two_drivers_starting_at_once_exactly_one_holds_the_storage(s3):
    """Both read no lease and write their own within the settle time; the read-back decides."""
    race = """
import sys, time
from harness.errors import StorageError
from harness.sweep.storage import SweepStorage
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # both start at the same moment, imports done
try:
    with SweepStorage.parse(sys.argv[1]).lease(settle_s=2.0):
        print("held", flush=True)
        time.sleep(6)  # past its TTL: a driver that came late sees it renewed and is refused
except StorageError as exc:
    print("refused", exc, flush=True)
"""
    start_at = str(time.time() + 15)
    env = {**os.environ, "CLOUDMASK_LEASE_TTL_S": "3"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", race, "s3://sweeps/race", start_at], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outcomes = sorted(p.communicate(timeout=120)[0].split()[0] for p in procs)
    assert outcomes == ["held", "refused"]
