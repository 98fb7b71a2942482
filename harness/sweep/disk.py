"""What a sweep writes to its storage, and Tune's experiment state kept readable through a full disk.

- :func:`sweep_estimate`: the bytes a sweep (or the rest of a resumed one) will write to its storage: each
  trial keeps one checkpoint (``num_to_keep=1``) of at most the largest network its search space allows
  (weights and Adam's two moments), plus a second one while a running trial replaces it, its result
  records, Tune's experiment state and the Optuna study. :func:`check_sweep_space` refuses a sweep that
  cannot fit before any trial runs.
- :func:`low_water_bytes`: the free space below which a running sweep stops as Ctrl-C stops it (trials
  paused at their checkpoints, state saved), so nothing is cut: what the trials in flight may still write.
- :func:`snapshot_state` / :func:`restore_snapshot`: Tune rewrites its experiment state in place, and a
  full disk cuts it; a copy of the last state that parsed is kept beside it, in the storage, and a resume
  whose state is cut restores from it.

Local and shared paths only: an object store has no free-space figure and writes each object whole.
No ``ray`` here (the driver's callback calls these functions).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness.config import Benchmark, TrainConfig
from harness.diskspace import SpaceEstimate, check_space
from harness.sweep.storage import SweepStorage

log = logging.getLogger("harness.sweep")

#: What a checkpoint holds beside its tensors (history, random states, config), and torch.save's framing
#: of each tensor (its record in the zip archive, alignment, pickled metadata); measured on fit's checkpoints.
CHECKPOINT_OVERHEAD, TENSOR_OVERHEAD = 64 * 1024, 512
#: Tune's records of one trial: params, result.json and progress.csv per epoch, error files.
TRIAL_RECORD_BYTES, EPOCH_RECORD_BYTES = 32 * 1024, 4 * 1024
#: Tune's experiment state (and the search state beside it), per trial; kept twice (the last good copy).
STATE_BYTES_PER_TRIAL = 32 * 1024
#: The Optuna study: the empty database, and each trial's row, parameters and intermediate values.
STUDY_BASE_BYTES, STUDY_BYTES_PER_EPOCH = 256 * 1024, 2 * 1024
#: Slack below the low-water mark for what is not per trial (Tune's state upload, SQLite's journal, logs).
LOW_WATER_SLACK = 16 * 2**20

#: Tune's experiment state and the search and callback state it saves beside it at every snapshot.
STATE_PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl", "callback-states-*.pkl")
#: The folder, inside each architecture's experiment, holding the copy of the last state that parsed.
LAST_GOOD_DIR = ".last-good-state"


def largest_config(bench: Benchmark, arch: str) -> TrainConfig:
    """The biggest network a trial of ``arch`` may build: the search space's deepest, widest choice."""
    config, space = bench.trial_config(arch), bench.search_spaces[arch]
    biggest = {}
    for key in ("depth", "base_channels"):
        spec = space.get(key)
        if spec is not None:
            biggest[key] = int(max(spec.get("choices") or (spec["high"],)))
    spec = space.get("deep_supervision")
    if spec is not None and True in (spec.get("choices") or ()):
        biggest["deep_supervision"] = True
    return TrainConfig(**{**config.__dict__, **biggest})


def checkpoint_bytes(config: TrainConfig) -> int:
    """The size of one of ``fit``'s checkpoints of ``config``: weights and Adam's two moments, buffers, the rest.

    The network is built on torch's meta device: shapes only, no memory, whatever its size.
    """
    import torch

    from harness.training.loop import model_from_config

    with torch.device("meta"):
        model = model_from_config(config)
    parameters, buffers = list(model.parameters()), list(model.buffers())
    weights = sum(p.numel() * p.element_size() for p in parameters)
    stored = 3 * weights + sum(b.numel() * b.element_size() for b in buffers)
    # Each stored tensor costs its framing too: weights, Adam's two moments and step per parameter, buffers.
    tensors = 4 * len(parameters) + len(buffers)
    return stored + tensors * TENSOR_OVERHEAD + CHECKPOINT_OVERHEAD


def trials_in_storage(storage: SweepStorage, arch: str) -> int:
    """How many trials the architecture's Tune experiment already holds (folders with their params)."""
    folder = Path(storage.uri) / arch
    if storage.remote or not folder.is_dir():
        return 0
    return sum(1 for d in folder.iterdir() if (d / "params.json").is_file())


def sweep_estimate(bench: Benchmark, storage: SweepStorage) -> SpaceEstimate:
    """What the sweep, or the rest of a resumed one, will write to ``storage`` (every architecture)."""
    checkpoints = records = state = study = 0
    for arch in bench.architectures:
        trials = max(bench.search.num_samples - trials_in_storage(storage, arch), 0)
        in_flight = min(bench.search.max_concurrent, trials)
        size = checkpoint_bytes(largest_config(bench, arch))
        checkpoints += (trials + in_flight) * size
        records += trials * (TRIAL_RECORD_BYTES + bench.train.epochs * EPOCH_RECORD_BYTES)
        state += 2 * bench.search.num_samples * STATE_BYTES_PER_TRIAL
        study += STUDY_BASE_BYTES + trials * bench.train.epochs * STUDY_BYTES_PER_EPOCH
    parts = {"trial checkpoints": checkpoints, "trial records": records, "Tune's experiment state": state}
    if not bench.search.study_database:
        parts["Optuna study"] = study
    return SpaceEstimate(parts)


def check_sweep_space(bench: Benchmark, storage: SweepStorage) -> SpaceEstimate:
    """Refuse, before any trial, a sweep whose storage cannot hold it (InsufficientSpaceError, exit 3)."""
    estimate = sweep_estimate(bench, storage)
    check_space(storage.uri, estimate, "storage")
    return estimate


def low_water_bytes(bench: Benchmark) -> int:
    """Free space a running sweep keeps: two checkpoints of each trial in flight, and some slack."""
    largest = max(checkpoint_bytes(largest_config(bench, arch)) for arch in bench.architectures)
    return 2 * bench.search.max_concurrent * largest + LOW_WATER_SLACK


# ---------------------------------------------------------------------------------- the last good state
def _newest(folder: Path, pattern: str) -> Path | None:
    names = fnmatch.filter((p.name for p in folder.iterdir() if p.is_file()), pattern) if folder.is_dir() else []
    return folder / max(names) if names else None


def state_files(exp_dir: Path) -> list[Path]:
    """The newest file of each kind of Tune's saved state in an experiment folder (the ones a restore reads)."""
    found = (_newest(exp_dir, pattern) for pattern in STATE_PATTERNS)
    return [p for p in found if p is not None]


def trials_of_state(path: Path) -> list[tuple[str, str]]:
    """(trial id, status) of every trial an experiment state file holds; raises if it does not parse."""
    state = json.loads(path.read_text())
    trials = []
    for trial_json, _runtime in state["trial_data"]:
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        trials.append((str(trial["trial_id"]), str(trial["status"])))
    return trials


@dataclass(frozen=True)
class Snapshot:
    """A copy of Tune's saved state that parsed: where it is, when it was taken, the trials it holds."""

    folder: Path
    taken: str
    trials: tuple[tuple[str, str], ...]


def snapshot_state(exp_dir: str | Path, readers: dict[str, object]) -> Snapshot | None:
    """Copy the experiment's saved state to ``LAST_GOOD_DIR`` if every file of it parses; else keep the old copy.

    ``readers``: pattern -> function that parses a file's bytes (raises when it does not), for the search
    state; the experiment state itself is read as JSON. The copy is written beside the old one and
    renamed over it, so a full disk leaves the previous good copy. Returns the new snapshot, or None.
    """
    exp_dir = Path(exp_dir)
    files = state_files(exp_dir)
    experiment = [p for p in files if fnmatch.fnmatch(p.name, STATE_PATTERNS[0])]
    if not experiment:
        return None
    try:
        trials = trials_of_state(experiment[0])
        for path in files:
            for pattern, read in readers.items():
                if fnmatch.fnmatch(path.name, pattern):
                    read(path.read_bytes())
    except Exception:  # being written right now, or cut: the old copy stays the good one
        return None
    target = exp_dir / LAST_GOOD_DIR
    staging = exp_dir / f"{LAST_GOOD_DIR}.tmp-{os.getpid()}"
    taken = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for path in files:
            shutil.copy2(path, staging / path.name)
        (staging / "taken").write_text(taken)
        old = exp_dir / f"{LAST_GOOD_DIR}.old-{os.getpid()}"
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:  # no room even for the copy: keep the previous one
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("could not keep a copy of Tune's experiment state in %s: %s", target, exc)
        return None
    return Snapshot(target, taken, tuple(trials))


def last_good(exp_dir: str | Path) -> Snapshot | None:
    """The copy of the last state that parsed, if the experiment has one (and it still parses)."""
    folder = Path(exp_dir) / LAST_GOOD_DIR
    experiment = _newest(folder, STATE_PATTERNS[0])
    if experiment is None:
        return None
    try:
        trials = trials_of_state(experiment)
    except Exception:
        return None
    taken = (folder / "taken").read_text().strip() if (folder / "taken").is_file() else "?"
    return Snapshot(folder, taken, tuple(trials))


def restore_snapshot(exp_dir: str | Path, snapshot: Snapshot) -> list[Path]:
    """Put the snapshot's files back as the experiment's state; the files they replace are renamed ``*.cut``.

    Every current state file is moved aside (also those of a later session that the snapshot has no
    copy of, which Tune would otherwise read as the newest). Returns the files moved aside.
    """
    exp_dir = Path(exp_dir)
    moved = []
    for pattern in STATE_PATTERNS:
        for name in fnmatch.filter((p.name for p in exp_dir.iterdir() if p.is_file()), pattern):
            aside = exp_dir / f"{name}.cut"
            (exp_dir / name).replace(aside)
            moved.append(aside)
    for path in snapshot.folder.iterdir():
        if path.name != "taken":
            shutil.copy2(path, exp_dir / path.name)
    return moved


def storage_folder(storage: SweepStorage) -> Path | None:
    """The storage as a local folder, or None for an object store."""
    return None if storage.remote else Path(storage.uri)
