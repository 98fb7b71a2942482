"""What a resumed sweep checks and repairs before ``Tuner.restore``.

- :func:`check_same_benchmark`: the benchmark may change where things are and how much hardware runs
  them (:data:`RESUMABLE_CHANGES`), never what the sweep measures;
- :func:`check_restorable`: an experiment state, or the search state Tune keeps beside it, that exists but
  cannot be read is restored from the harness's copy of the last good state, or else refused, naming it
  (Tune would silently start the architecture again);
- :func:`recover_lost_checkpoints`: a checkpoint Tune deleted before its state upload is put back.

One of the sweep driver's modules, the only ones that import ``ray`` (see :mod:`harness.sweep.driver`).
"""

from __future__ import annotations

import collections
import fnmatch
import logging
import posixpath
from typing import Any

import pyarrow.fs as pafs
from ray import cloudpickle, tune

from harness.config import Benchmark
from harness.config.benchmark import RENAMED_SEARCH_KEYS
from harness.errors import SweepError
from harness.sweep.disk import last_good, restore_snapshot
from harness.sweep.searcher import load_state
from harness.sweep.storage import SWEEP_FILE, SweepStorage

log = logging.getLogger("harness.sweep")


#: Settings a resumed sweep may change: where things are and how much hardware runs them, never what is measured.
RESUMABLE_CHANGES = ("data.root", "data.cache_dir", "storage", "tracking.uri", "ray.", "resources.", "failure.")
RESUMABLE_CHANGES += ("search.max_concurrent", "compare.", "tracking.system_metrics_s")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"a.b": value}``."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): obj}


def check_same_benchmark(stored: dict[str, Any] | None, bench: Benchmark, storage: SweepStorage) -> None:
    """Refuse a resume whose benchmark changes what the sweep measures (naming each key, then and now)."""
    if stored is None:
        return
    before, now = _flatten(stored), _flatten(bench.to_dict())
    for old, new in RENAMED_SEARCH_KEYS.items():  # a sweep started before a key was renamed
        if f"search.{old}" in before:
            before[f"search.{new}"] = before.pop(f"search.{old}")
    changed = [
        key
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key) and not key.startswith(RESUMABLE_CHANGES)
    ]
    if changed:
        listed = ", ".join(f"{k} ({before.get(k)!r} -> {now.get(k)!r})" for k in changed)
        raise SweepError(
            f"--resume: the benchmark differs from the one sweep {storage.child(SWEEP_FILE)} was started with, in "
            f"{listed}; a resumed sweep must measure what it started measuring. Resume with the original settings, "
            "or start a new sweep with another --storage"
        )


#: The search state Tune saves beside its experiment state, with how each is read on restore: the search
#: generator's (Tune's pickle) and the searcher's (:meth:`OptunaStudySearcher.save`'s JSON). Tune loads the
#: newest of each by name, and restarts the whole experiment when that one cannot be read.
SEARCH_STATE_FILES = {"search_gen_state-*.json": cloudpickle.loads, "searcher-state-*.pkl": load_state}


#: Every saved-state file the harness's copy of the last good state checks before keeping it.
STATE_READERS = {**SEARCH_STATE_FILES, "callback-states-*.pkl": cloudpickle.loads}


def check_restorable(storage: SweepStorage, architectures: tuple[str, ...]) -> None:
    """Refuse a resume whose Tune experiment state or search state exists but cannot be read, naming it.

    Restoring from either would silently start that architecture again (Tune logs "Failed to restore the
    run state" and restarts). A full disk, or a driver killed while Tune copied its state to the storage,
    leaves such a file. Where the harness kept a copy of the last state that parsed
    (:func:`harness.sweep.disk.snapshot_state`, local and shared storage), that copy is put back instead,
    and the log says which trials it takes back; otherwise moving the experiment aside is the user's call
    (the message says how).
    """
    for arch in architectures:
        exp_path = storage.child(arch)
        if not tune.Tuner.can_restore(exp_path):
            continue
        problem = _unreadable_state(storage, arch)
        if problem is None:
            continue
        what, exc = problem
        snapshot = None if storage.remote else last_good(exp_path)
        if snapshot is None:
            raise _unrestorable(what, exc, arch, exp_path) from None
        moved = restore_snapshot(exp_path, snapshot)
        again = _unreadable_state(storage, arch)
        if again is not None:
            raise _unrestorable(again[0], again[1], arch, exp_path) from None
        statuses = collections.Counter(status for _, status in snapshot.trials)
        log.warning(
            "%s cannot be read (%s: %s); restoring %s from the copy of its last good state (taken %s), which "
            "takes back %d trial(s) (%s): %s. Trials started after it are not in it: Tune starts new ones in "
            "their place. The cut files are kept as %s",
            what,
            type(exc).__name__,
            str(exc)[:200],
            arch,
            snapshot.taken,
            len(snapshot.trials),
            ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())),
            ", ".join(trial_id for trial_id, _ in snapshot.trials),
            ", ".join(p.name for p in moved),
        )


def _unreadable_state(storage: SweepStorage, arch: str) -> tuple[str, Exception] | None:
    """(what, why) for the first of the architecture's saved state files that cannot be read; None if all can."""
    exp_path = storage.child(arch)
    try:
        tune.ExperimentAnalysis(exp_path)
    except Exception as exc:
        return f"Tune's experiment state in {exp_path}", exc
    files = storage.list_files(arch)
    for pattern, read in SEARCH_STATE_FILES.items():
        names = fnmatch.filter(files, pattern)
        if not names:
            continue
        newest = max(names)  # the one Tune loads
        try:
            read(storage.read_bytes(f"{arch}/{newest}") or b"")
        except Exception as exc:
            return f"Tune's search state {exp_path}/{newest}", exc
    return None


def _unrestorable(what: str, exc: Exception, arch: str, exp_path: str) -> SweepError:
    return SweepError(
        f"--resume: {what} cannot be read ({type(exc).__name__}: {str(exc)[:300]}), and there is no copy of a "
        f"last good state to restore instead. Restoring would start {arch} again from nothing. To do that "
        f"deliberately, move {exp_path} aside and --resume again (its trials' MLflow runs are then retired)"
    )


def recover_lost_checkpoints(exp_path: str) -> None:
    """Put back, under the name the stored experiment state gives, each unfinished trial's lost checkpoint.

    With ``num_to_keep=1`` Tune deletes a trial's previous checkpoint as soon as it registers the next one,
    but uploads its experiment state in the background, later: a driver killed in between leaves a state
    that names a checkpoint no longer in the storage, and every retry of that trial then fails with
    "Could not recover from checkpoint as it does not exist on storage anymore". The trial's newest
    checkpoint is moved to the name the state expects; it carries its own epoch, and trials report
    ``training_iteration = epoch``, so the trial resumes where it really was.
    """
    for trial in tune.ExperimentAnalysis(exp_path).trials:
        checkpoint = trial.checkpoint
        if checkpoint is None or trial.status == "TERMINATED":
            continue
        fs = checkpoint.filesystem
        if fs.get_file_info(checkpoint.path).type != pafs.FileType.NotFound:
            continue
        trial_dir = posixpath.dirname(checkpoint.path)
        found = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
        newest = max(
            (i.path for i in found if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")),
            default=None,
        )
        if newest is None:
            log.warning("trial %s: its checkpoint %s is gone and no other exists", trial.trial_id, checkpoint.path)
            continue
        log.warning(
            "trial %s: the saved experiment state names %s, deleted after %s was written (the driver died "
            "between the two uploads); resuming from %s",
            trial.trial_id,
            posixpath.basename(checkpoint.path),
            posixpath.basename(newest),
            posixpath.basename(newest),
        )
        pafs.copy_files(newest, checkpoint.path, source_filesystem=fs, destination_filesystem=fs)
        fs.delete_dir(newest)
