"""The sweep's console: a Ray Tune progress reporter that shows the trials, not Tune's internals.

Tune's own ``CLIReporter`` prints a 7-line ``== Status ==`` block every 5 s, every trial's full config
(constants included), a Ray temp folder as "Result logdir" and "n/infinite" trials (the sweep runs Tune
with unlimited samples and lets its searcher stop at the budget). :class:`TrialTable` prints, per
architecture, at ``NORMAL`` verbosity one line when the trials' state changes (at most every
``interval_s``) and, when the experiment ends, one row per trial with only the searched parameters, its
epoch and validation IoU; at ``VERBOSE`` the table at every report; nothing at ``QUIET``
(:mod:`harness.console`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from ray.tune import ProgressReporter

from harness.console import NORMAL, QUIET, VERBOSE, say, table, verbosity
from harness.sweep.sampling import stopped_by

#: How a trial's state reads in the table: Tune's status, or for a finished trial how it stopped.
_ENDED = {"completed": "completed", "asha": "stopped (ASHA)", "diverged": "diverged", "error": "error"}


class TrialTable(ProgressReporter):
    """One architecture's trials as a compact table (``searched``: the search space's keys, in order)."""

    def __init__(
        self, arch: str, budget: int, searched: Sequence[str], *, metric: str, max_epochs: int, interval_s: float = 30
    ) -> None:
        self.arch, self.budget, self.searched = arch, budget, list(searched)
        self.metric, self.max_epochs, self.interval_s = metric, max_epochs, interval_s
        self._last_time = 0.0
        self._last_line: str | None = None

    def setup(self, start_time=None, total_samples=None, metric=None, mode=None, **kwargs) -> None:
        """Tune's totals are ignored: the budget is the searcher's (``budget``), Tune's is unlimited."""

    def should_report(self, trials, done: bool = False) -> bool:
        """At the end, and at most every ``interval_s`` (a third of it when verbose) while running."""
        if verbosity() == QUIET:
            return False
        interval = self.interval_s / 3 if verbosity() == VERBOSE else self.interval_s
        now = time.monotonic()
        if done or now - self._last_time >= interval:
            self._last_time = now
            return True
        return False

    def report(self, trials, done: bool, *sys_info: str) -> None:
        """Print the status line (when it changed) and, at the end or when verbose, the trial table."""
        rows = [self.row(t) for t in trials]
        line = self.status_line(rows)
        if line != self._last_line or done:
            say(line)
            self._last_line = line
        if rows and (done or verbosity() >= VERBOSE):
            say(table(rows, ["trial", "state", *self.searched, "epoch", self.metric]))

    def row(self, trial: Any) -> dict[str, Any]:
        """One trial as a table row: its short id, state, searched values, last epoch and metric."""
        result = trial.last_result or {}
        if trial.status == "TERMINATED":
            state = _ENDED[stopped_by(result, error=False)]
        elif trial.status == "ERROR":
            state = "error"
        else:
            state = trial.status.lower()
        epoch = result.get("training_iteration")
        value = result.get(self.metric)
        row = {
            "trial": trial.trial_id,
            "state": state,
            "epoch": f"{int(epoch)}/{self.max_epochs}" if epoch is not None else "-",
            self.metric: float(value) if isinstance(value, int | float) else math.nan,
        }
        row.update({key: trial.config.get(key) for key in self.searched})
        return row

    def status_line(self, rows: list[dict[str, Any]]) -> str:
        """``unet: 5 of 8 trials: 3 completed, 2 running · best completed: 07bd5125 val_iou 0.7517``."""
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none started"
        line = f"{self.arch}: {len(rows)} of {self.budget} trials: {states}"
        # As the sweep will choose (harness.sweep.result.select_best): among trials that ran every epoch.
        scored = [r for r in rows if r["state"] == "completed" and not math.isnan(r[self.metric])]
        if scored:
            best = max(scored, key=lambda r: r[self.metric])
            line += f" · best completed: {best['trial']} {self.metric} {best[self.metric]:.4f}"
        return line


def tune_verbosity() -> int:
    """Tune's ``verbose`` for the process's verbosity: its trial messages only when verbose."""
    return {QUIET: 0, NORMAL: 1, VERBOSE: 2}[verbosity()]


__all__ = ["NORMAL", "TrialTable", "tune_verbosity"]
