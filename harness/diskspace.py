"""Free space where the harness writes: checked before the work, its lack told apart, files written whole.

- :func:`free_bytes` / :func:`check_space`: refuse work whose estimated output (a :class:`SpaceEstimate`)
  cannot fit, before any compute (:class:`~harness.errors.InsufficientSpaceError`, exit 3);
- :func:`no_space_detail`: whether an exception, anywhere in its chain, is a file system out of space
  (``ENOSPC``, a quota, SQLite's "database or disk is full"), so it ends as exit 4 with a message, not a
  traceback;
- :func:`write_atomically`: a temporary name beside the target, fsync, rename: a full disk leaves the old
  file or none, never half of the new one.

Object stores have no free-space figure: :func:`free_bytes` is None for a URI and the check is skipped.
Standard library only, so every layer may use it.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import InsufficientSpaceError

MB = 1_000_000
#: errno values that mean "the file system (or the user's quota on it) is full".
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: How libraries say it when they do not raise the OSError itself (SQLite via SQLAlchemy/Optuna, pyarrow).
NO_SPACE_TEXTS = ("No space left on device", "database or disk is full", "Disk quota exceeded")


def megabytes(n: float) -> str:
    """``n`` bytes as "12.3 MB"."""
    return f"{n / MB:,.1f} MB"


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system that holds ``path`` (or would: its nearest existing parent).

    None for an object-store URI (``s3://``, ``gs://``): they report no free space, and are not checked.
    """
    text = str(path)
    scheme, sep, rest = text.partition("://")
    if sep and scheme != "file":
        return None
    folder = Path(rest if sep else text).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


@dataclass(frozen=True)
class SpaceEstimate:
    """What a command will write to one place: the total and what it is made of (name -> bytes)."""

    parts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """The sum of the parts, in bytes."""
        return int(sum(self.parts.values()))

    def describe(self) -> str:
        """The total and its parts, largest first: "about 12.3 MB (trial checkpoints 11.0 MB, ...)"."""
        largest_first = sorted(self.parts.items(), key=lambda part: -part[1])
        listed = ", ".join(f"{name} {megabytes(size)}" for name, size in largest_first)
        return f"about {megabytes(self.total)} ({listed})"


def check_space(path: str | Path, estimate: SpaceEstimate, what: str) -> int | None:
    """Refuse (:class:`InsufficientSpaceError`, naming ``what`` and ``path``) when ``estimate`` does not fit.

    Returns the free bytes found, or None where there is no figure to check (an object store).
    """
    free = free_bytes(path)
    if free is not None and free < estimate.total:
        raise InsufficientSpaceError(
            f"{what} {path}: needs {estimate.describe()}, but its file system has {megabytes(free)} free; "
            f"free {megabytes(estimate.total - free)} or more there, or choose another {what}"
        )
    return free


def no_space_detail(exc: BaseException) -> str | None:
    """What ran out of space, when ``exc`` or an exception in its chain is a full file system; else None.

    The detail names the file where the error does (an ``OSError``'s filename), else the error's text.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in NO_SPACE_ERRNOS:
            reason = os.strerror(cause.errno)
            return f"{cause.filename}: {reason}" if cause.filename else reason
        text = str(cause)
        if any(marker in text for marker in NO_SPACE_TEXTS):
            return text.strip().splitlines()[0][:300]
        cause = cause.__cause__ or cause.__context__
    return None


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it, flushed to disk, renamed over it.

    On a full disk the write of the temporary file fails, it is removed, and ``path`` keeps what it had.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename itself reaches the disk only with its folder.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
