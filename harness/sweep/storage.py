"""Where a sweep keeps everything it needs to resume: a local folder, a shared path or an object store.

A sweep's storage (``storage:`` in the benchmark, ``--storage`` on the command line) holds:

- ``sweep.json``: the sweep's identity and state (sweep id, split hash, resolved benchmark);
- ``optuna.db``: the Optuna studies (one per architecture), unless ``search.study_database`` names an RDB;
- ``<arch>/``: Ray Tune's experiment of each architecture (trial checkpoints, experiment state).

A local or shared path is used in place. For ``s3://`` and ``gs://`` URIs (pyarrow's filesystems, the
same ones Ray Tune uses) the driver works on a local copy of ``optuna.db`` and uploads it whenever Tune
saves its experiment state (see :class:`StudyFile`), so a driver started anywhere with only the benchmark,
``--storage`` and ``--tracking-uri`` finds everything again. No ``ray`` and no ``mlflow`` here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from harness.diskspace import write_atomically
from harness.errors import ConfigError, StorageError
from harness.retry import with_retries

SWEEP_FILE = "sweep.json"
#: The lock file a driver holds for as long as it uses the storage (see :meth:`SweepStorage.lock`).
LOCK_FILE = ".driver.lock"
#: The lease a driver holds on an object store instead (no file locks there), renewed while it runs.
LEASE_FILE = ".driver.lease"
#: A lease not renewed for this long is a dead driver's, and the next driver takes it over.
LEASE_TTL_S = 60.0
LEASE_TTL_ENV = "CLOUDMASK_LEASE_TTL_S"
#: After writing its lease a driver reads it back this much later: of two drivers that started at once,
#: the one whose write the store kept holds it, the other is refused.
LEASE_SETTLE_S = 2.0
STUDY_FILE = "optuna.db"
#: URI schemes a sweep storage may use ("" is a local or shared path).
OBJECT_STORE_SCHEMES = ("s3", "gs")
log = logging.getLogger(__name__)


def _credential_hint(scheme: str) -> str:
    """Where the object store's credentials are read from, and which of those this process has."""
    if scheme == "s3":
        seen = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE") if os.environ.get(k)]
        seen += [f for f in ("~/.aws/credentials", "~/.aws/config") if Path(f).expanduser().is_file()]
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return (
            "S3 credentials are read from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE (~/.aws/credentials) "
            f"or the instance role; this process has {', '.join(seen) if seen else 'none of the first two'}"
            + (f"; endpoint from AWS_ENDPOINT_URL: {endpoint}" if endpoint else "")
        )
    seen = [k for k in ("GOOGLE_APPLICATION_CREDENTIALS",) if os.environ.get(k)]
    return (
        "GCS credentials are read from GOOGLE_APPLICATION_CREDENTIALS, gcloud's application-default credentials "
        f"or the instance's service account; this process has {', '.join(seen) if seen else 'no key file set'}"
    )


@dataclass(frozen=True)
class SweepStorage:
    """A sweep's storage location: an absolute local path, or ``s3://bucket/prefix`` / ``gs://bucket/prefix``."""

    uri: str

    @classmethod
    def parse(cls, text: str) -> SweepStorage:
        """Normalise ``storage`` / ``--storage``; a scheme other than a path, ``file://``, s3 or gs is a ConfigError."""
        text = str(text).strip()
        scheme, sep, rest = text.partition("://")
        if not sep:
            return cls(str(Path(text).expanduser().resolve()))
        if scheme == "file":
            return cls(str(Path(rest).resolve()))
        if scheme not in OBJECT_STORE_SCHEMES or not rest.strip("/"):
            raise ConfigError(
                f"storage: {text!r} is not a sweep storage; use a local or shared path, file://PATH, "
                "s3://BUCKET/PREFIX or gs://BUCKET/PREFIX"
            )
        if "?" in rest:
            # Tune appends experiment names to the URI, which a query string would break.
            raise ConfigError(
                f"storage: {text!r}: no query string; set the endpoint with AWS_ENDPOINT_URL (S3-compatible stores)"
            )
        return cls(f"{scheme}://{rest.rstrip('/')}")

    @property
    def scheme(self) -> str:
        """``s3``, ``gs`` or ``""`` (a local or shared path)."""
        return self.uri.partition("://")[0] if "://" in self.uri else ""

    @property
    def remote(self) -> bool:
        """True for an object store (the driver keeps local copies of what it writes often)."""
        return bool(self.scheme)

    def child(self, name: str) -> str:
        """The URI (or path) of ``name`` inside the storage."""
        return f"{self.uri}/{name}"

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        if not self.remote:
            return pafs.LocalFileSystem(), self.uri
        try:
            return pafs.FileSystem.from_uri(self.uri)
        except Exception as exc:  # e.g. a malformed bucket name, or pyarrow built without that filesystem
            raise StorageError(f"storage {self.uri}: {exc}") from None

    def _fail(self, what: str, exc: BaseException) -> StorageError:
        hint = f"; {_credential_hint(self.scheme)}" if self.remote else ""
        return StorageError(f"storage {self.uri}: {what}: {exc}{hint}")

    def check(self) -> None:
        """Fail fast, naming the URI, when the storage is unreachable, missing or not writable.

        For an object store the bucket must exist and accept a write (a probe object, deleted at once), so
        wrong credentials or endpoint fail here, before any trial, and not at the first checkpoint.
        """
        fs, base = self._fs()
        if not self.remote:
            try:
                Path(base).mkdir(parents=True, exist_ok=True)
                probe = Path(base) / f".probe-{uuid.uuid4().hex}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise self._fail("not writable", exc) from None
            return
        bucket = base.split("/", 1)[0]
        try:
            info = fs.get_file_info(bucket)
        except OSError as exc:
            raise self._fail("the object store is unreachable or refused the request", exc) from None
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"storage {self.uri}: bucket {bucket!r} does not exist (create it first)")
        probe = f"{base}/.probe-{uuid.uuid4().hex}"
        try:
            with fs.open_output_stream(probe) as out:
                out.write(b"")
            fs.delete_file(probe)
        except OSError as exc:
            raise self._fail("cannot write", exc) from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the storage for this driver: a second driver on the same storage is refused, naming this one.

        Two drivers in one storage would run Tune in the same folders and overwrite each other's
        ``sweep.json``. On a local or shared path the lock is ``fcntl.flock`` on ``LOCK_FILE`` (on NFS a
        server-side lock): the kernel (or the NFS server's lease) releases it when the driver dies, even
        by SIGKILL, so a dead driver's lock is taken over without anyone's help. The file names the holder
        (pid, host, command, since when) for the refusal. Object stores have no file locks: there the
        driver holds a lease instead (:meth:`lease`).
        """
        if self.remote:
            with self.lease():
                yield
            return
        path = Path(self.uri) / LOCK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                raise StorageError(
                    f"storage {self.uri} is in use by another sweep driver ({holder}); two drivers would run "
                    "Tune in the same folders: wait for it to end, stop it (Ctrl-C; continue with --resume), "
                    "or pass another --storage"
                ) from None
            info = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
            info += " ".join(sys.argv)[:300]
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def lease(self, ttl_s: float | None = None, settle_s: float = LEASE_SETTLE_S) -> Iterator[None]:
        """Hold an object-store storage for this driver with a lease: ``LEASE_FILE``, renewed every ``ttl_s / 3``.

        ``ttl_s`` defaults to ``LEASE_TTL_S`` (``CLOUDMASK_LEASE_TTL_S`` in the environment overrides it).
        Another driver's lease is watched for up to its own TTL: renewed meanwhile, its driver is alive and
        this one is refused, naming it; not renewed, its driver is dead (a SIGKILL leaves its lease as it
        was) and the lease is taken over, with a warning naming it. A lease whose last renewal is older than
        its TTL by this machine's clock is taken over without waiting. Ours is written, then read back
        ``settle_s`` later: an object store keeps the last of two writes, so of two drivers that started at
        once exactly one finds its own token and goes on. Ended (deleted) when the driver leaves.
        """
        ttl_s = float(os.environ.get(LEASE_TTL_ENV, LEASE_TTL_S)) if ttl_s is None else ttl_s
        token = uuid.uuid4().hex
        held = self._read_lease()
        if held is not None:
            self._wait_for_stale(held)
        now = time.time()
        holder = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
        holder += " ".join(sys.argv)[:300]
        lease = {"token": token, "holder": holder, "ttl_s": ttl_s, "renewed": now}
        self._put(LEASE_FILE, json.dumps(lease).encode())
        time.sleep(settle_s)
        won = self._read_lease()
        if won is None or won.get("token") != token:
            raise StorageError(
                f"storage {self.uri}: another sweep driver took the lease at the same moment "
                f"({(won or {}).get('holder', '?')}); pass another --storage or wait for it to end"
            )
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew_lease, args=(lease, stop), name="storage-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(timeout=10)
            with contextlib.suppress(StorageError, OSError):
                current = self._read_lease()
                if current is not None and current.get("token") == token:
                    fs, base = self._fs()
                    fs.delete_file(f"{base}/{LEASE_FILE}")

    def _wait_for_stale(self, held: dict[str, Any]) -> None:
        """Return once ``held`` is a dead driver's lease; StorageError naming its holder if it is renewed meanwhile."""
        ttl = float(held.get("ttl_s", LEASE_TTL_S))
        age = time.time() - float(held.get("renewed", 0))
        if age < ttl:
            log.warning(
                "storage %s: another driver's lease (%s) was renewed %.0f s ago: watching it for up to %.0f s "
                "(renewed: that driver is alive and this one stops; not renewed: it is taken over)",
                self.uri,
                held.get("holder", "?"),
                age,
                ttl,
            )
            deadline = time.monotonic() + ttl
            while time.monotonic() < deadline:
                time.sleep(min(1.0, ttl / 10))
                now = self._read_lease()
                if now is None:
                    return  # its driver ended and released it
                if now.get("renewed") != held.get("renewed") or now.get("token") != held.get("token"):
                    raise StorageError(
                        f"storage {self.uri} is in use by another sweep driver ({now.get('holder', '?')}; it "
                        f"renews its lease {self.child(LEASE_FILE)}); two drivers would run Tune in the same "
                        "folders: wait for it to end, stop it (Ctrl-C; continue with --resume), or pass another "
                        "--storage"
                    )
        log.warning(
            "storage %s: taking over the lease of a driver that stopped renewing it (%s)",
            self.uri,
            held.get("holder", "?"),
        )

    def _read_lease(self) -> dict[str, Any] | None:
        data = self.read_bytes(LEASE_FILE)
        if data is None:
            return None
        try:
            return json.loads(data.decode())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"holder": "an unreadable lease", "renewed": 0}  # cut by a dying writer: stale

    def _renew_lease(self, lease: dict[str, Any], stop: threading.Event) -> None:
        """Rewrite the lease every third of its TTL until ``stop``; a lease lost to another driver is logged."""
        while not stop.wait(lease["ttl_s"] / 3):
            try:
                current = self._read_lease()
                if current is not None and current.get("token") != lease["token"]:
                    log.error(
                        "storage %s: the lease was taken over by another driver (%s) while this one ran: "
                        "was this driver paused for longer than %.0f s?",
                        self.uri,
                        current.get("holder", "?"),
                        lease["ttl_s"],
                    )
                    return
                self._put(LEASE_FILE, json.dumps({**lease, "renewed": time.time()}).encode())
            except StorageError as exc:  # the store is down for a moment: the TTL leaves time to retry
                log.warning("storage %s: could not renew the driver's lease: %s", self.uri, exc)

    def read_json(self, name: str) -> dict[str, Any] | None:
        """The JSON file ``name`` in the storage, or None when there is none."""
        data = self.read_bytes(name)
        if data is None:
            return None
        try:
            return json.loads(data.decode())
        except json.JSONDecodeError as exc:
            raise StorageError(f"{self.child(name)}: not valid JSON: {exc}") from None

    def read_bytes(self, name: str) -> bytes | None:
        """The bytes of ``name``, or None when the storage has no such file (StorageError when unreadable)."""
        fs, base = self._fs()
        path = f"{base}/{name}"
        try:
            if fs.get_file_info(path).type == pafs.FileType.NotFound:
                return None
            with fs.open_input_stream(path) as f:
                return f.read()
        except OSError as exc:
            raise self._fail(f"cannot read {name}", exc) from None

    def list_files(self, folder: str) -> list[str]:
        """Names of the files directly in ``folder`` of the storage, sorted (none when it does not exist)."""
        fs, base = self._fs()
        try:
            found = fs.get_file_info(pafs.FileSelector(f"{base}/{folder}", allow_not_found=True))
        except OSError as exc:
            raise self._fail(f"cannot list {folder}", exc) from None
        return sorted(i.base_name for i in found if i.type == pafs.FileType.File)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        """Write ``name`` whole: a temporary file renamed over it locally, a single PUT to an object store."""
        payload = json.dumps(data, indent=2).encode()
        if not self.remote:
            path = Path(self.uri) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, payload)  # a full disk leaves the old file, never half of the new
            return
        self._put(name, payload)

    def _put(self, name: str, payload: bytes) -> None:
        fs, base = self._fs()
        if not self.remote:
            Path(base).mkdir(parents=True, exist_ok=True)

        def write() -> None:
            with fs.open_output_stream(f"{base}/{name}") as out:
                out.write(payload)

        # A blip in the object store should not end a long sweep.
        def fail(exc: BaseException) -> StorageError:
            return self._fail(f"cannot write {name}", exc)

        with_retries(write, attempts=4, delay=0.5, retry_on=(OSError,), give_up=fail)

    def download(self, name: str, local: Path) -> bool:
        """Copy ``name`` to ``local``; False when the storage has no such file."""
        data = self.read_bytes(name)
        if data is None:
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        return True

    def upload(self, local: Path, name: str) -> None:
        """Copy the local file ``local`` to ``name`` in the storage (one PUT: readers see old or new, never half)."""
        self._put(name, local.read_bytes())

    def study_storage(self) -> str:
        """Where this sweep's Optuna studies live: an SQLite URL in place, or the study file's object-store URI."""
        if self.remote:
            return self.child(STUDY_FILE)
        return f"sqlite:///{Path(self.uri) / STUDY_FILE}"


class StudyFile:
    """An SQLite study file kept in an object store: a local working copy, uploaded on :meth:`push`.

    The Ray searcher pushes it every time Tune saves its experiment state, just before Tune uploads that
    state, so the copy in the store is never older than the experiment a restored driver resumes.
    """

    def __init__(self, uri: str) -> None:
        storage_uri, _, name = uri.rpartition("/")
        self.storage = SweepStorage.parse(storage_uri)
        self.name = name
        self.local = Path(tempfile.mkdtemp(prefix="cloudmask-study-")) / name

    def pull(self) -> str:
        """Download the study file (if the store has one) and return the SQLite URL of the local copy."""
        self.storage.download(self.name, self.local)
        return f"sqlite:///{self.local}"

    def push(self) -> None:
        """Upload a consistent snapshot of the local copy (SQLite's backup API, then one PUT)."""
        if not self.local.exists():
            return
        snapshot = self.local.with_suffix(".snapshot")
        src, dst = sqlite3.connect(self.local), sqlite3.connect(snapshot)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        self.storage.upload(snapshot, self.name)
        snapshot.unlink()


def is_object_store_file(storage: str) -> bool:
    """True when a study storage string is a file in an object store (not an RDB URL)."""
    return storage.partition("://")[0] in OBJECT_STORE_SCHEMES
