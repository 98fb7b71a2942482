"""Checks a sweep makes around its trials: before any runs (what every trial would fail on) and after.

After: every architecture must end with a result to compare.

No ``ray`` here: the checks read the benchmark and the sweep's results only.
"""

from __future__ import annotations

import collections

from harness.config import Benchmark
from harness.errors import ConfigError, SweepError
from harness.sweep.result import SweepResult


def most_loader_workers(bench: Benchmark) -> int:
    """The most DataLoader workers any trial may start: ``train.num_workers`` or its search-space maximum."""
    most = bench.train.num_workers
    for space in bench.search_spaces.values():
        spec = space.get("num_workers")
        if spec is not None:
            most = max(most, *(spec.get("choices") or (spec["high"],)))
    return int(most)


def check_every_architecture_chose(results: list[SweepResult]) -> None:
    """Raise :class:`SweepError` when an architecture has no trial that ran every epoch (nothing to compare)."""
    empty = [r for r in results if r.best is None]
    if not empty:
        return
    lines = []
    for r in empty:
        ends = collections.Counter(t.stopped_by for t in r.trials)
        lines.append(f"{r.arch}: none of its {len(r.trials)} trials ran all {r.max_epochs} epochs ({dict(ends)})")
    raise SweepError(
        f"sweep {empty[0].sweep_id} spent its budget, but {'; '.join(lines)}; the final comparison would have "
        "nothing to retrain. See the trials' MLflow runs (tags stopped_by, error) and the trial logs"
    )


def check_trials_can_run(bench: Benchmark, patch_size: int) -> None:
    """Refuse, before any trial, configurations every trial would fail on (ConfigError naming the key).

    Depth: a patch must halve ``depth`` times evenly (``2**depth`` divides the patch size). Device: a
    trial asking for CUDA needs ``resources.gpu`` > 0, or Ray gives it no GPU.
    """
    for arch in bench.architectures:
        config, space = bench.trial_config(arch), bench.search_spaces[arch]
        depth_spec = space.get("depth")
        depths = (depth_spec.get("choices") or (depth_spec["high"],)) if depth_spec else (config.depth,)
        key = f"search_spaces.{arch}.depth" if depth_spec else "train.depth"
        deepest = max(int(d) for d in depths)
        if patch_size % 2**deepest:
            raise ConfigError(
                f"{key}: depth {deepest} needs patches divisible by 2**{deepest} = {2**deepest}; "
                f"this dataset's patches are {patch_size} px"
            )
    if bench.train.device.startswith("cuda") and bench.resources.gpu <= 0:
        raise ConfigError(
            f"train.device={bench.train.device} but resources.gpu is {bench.resources.gpu}: Ray would give the "
            "trials no GPU; set resources.gpu (e.g. 0.25 to share one GPU by four trials) or train.device=auto"
        )
