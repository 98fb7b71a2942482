"""Search spaces (YAML -> Optuna distributions) and how a finished trial is told to Optuna.

A search-space file maps a training key to a distribution::

    lr:            {type: loguniform, low: 1.0e-4, high: 1.0e-2}
    depth:         {type: int, low: 2, high: 4}
    base_channels: {type: categorical, choices: [8, 16]}
    weight_decay:  {type: float, low: 0.0, high: 1.0e-3}

Types: ``loguniform`` / ``uniform`` / ``float`` (``log: true`` allowed, ``step`` optional), ``int``
(``log``, ``step``), ``categorical`` (``choices``). No Ray here: the Ray searcher in
:mod:`harness.sweep.searcher` asks :func:`trial_outcome` what to tell Optuna, so that logic is tested without
training anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from harness.errors import SearchSpaceError

_TYPES = {"loguniform", "uniform", "float", "int", "categorical"}
_FIELDS = {
    "loguniform": {"type", "low", "high", "step", "log"},
    "uniform": {"type", "low", "high", "step", "log"},
    "float": {"type", "low", "high", "step", "log"},
    "int": {"type", "low", "high", "step", "log"},
    "categorical": {"type", "choices"},
}
#: ``check_value(key, value) -> value``: coerces a value to its field's type or raises ValueError.
ValueCheck = Callable[[str, Any], Any]


def load_search_space(
    entry: str | Path | Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    allowed_keys: Iterable[str] | None = None,
    patch_size: int | None = None,
    check_value: ValueCheck | None = None,
) -> dict[str, dict[str, Any]]:
    """Read a search space (a YAML file path or an inline mapping) and validate every entry.

    Relative paths are tried against the working directory, then against ``base_dir`` (the
    benchmark file's folder). ``check_value`` (the training config's own field check) is applied to
    every categorical choice and to both bounds of a range, so a value ``fit`` would refuse fails
    here, before Ray starts. ``patch_size``, when known, rejects depths whose 2**depth does not divide
    the patch.
    """
    if isinstance(entry, str | Path):
        path = _resolve(Path(entry), base_dir)
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise SearchSpaceError(f"{path}: not valid YAML: {exc}") from None
        where = str(path)
    else:
        raw, where = entry, "inline search space"
    if not isinstance(raw, Mapping) or not raw:
        raise SearchSpaceError(f"{where}: expected a non-empty mapping of key -> distribution")
    allowed = set(allowed_keys) if allowed_keys is not None else None
    space = {}
    for key, spec in raw.items():
        if allowed is not None and key not in allowed:
            raise SearchSpaceError(f"{where}: {key}: not a searchable key; valid: {', '.join(sorted(allowed))}")
        try:
            space[key] = _validate_entry(key, spec, patch_size, check_value)
        except SearchSpaceError as exc:
            raise SearchSpaceError(f"{where}: {exc}") from None
    return space


def _resolve(path: Path, base_dir: Path | None) -> Path:
    candidates = [path] if path.is_absolute() else [Path.cwd() / path]
    if base_dir is not None and not path.is_absolute():
        candidates += [base_dir / path, base_dir.parent / path]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise SearchSpaceError(f"search-space file not found: {path} (tried {', '.join(map(str, candidates))})")


def _number(key: str, name: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SearchSpaceError(f"{key}.{name}: expected a finite number, got {value!r}")
    return value


def _validate_entry(key: str, spec: Any, patch_size: int | None, check_value: ValueCheck | None) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        # A bare value fixes the key: handy for "this architecture always uses X".
        spec = {"type": "categorical", "choices": [spec]}
    kind = spec.get("type")
    if kind not in _TYPES:
        raise SearchSpaceError(f"{key}.type: expected one of {sorted(_TYPES)}, got {kind!r}")
    extra = sorted(set(spec) - _FIELDS[kind])
    if extra:
        raise SearchSpaceError(f"{key}.{extra[0]}: unknown field for type {kind}")
    out: dict[str, Any] = {"type": kind}
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{key}.choices: expected a non-empty list, got {choices!r}")
        out["choices"] = [_checked(key, c, check_value) for c in choices]
        values = out["choices"]
    else:
        for name in ("low", "high"):
            if name not in spec:
                raise SearchSpaceError(f"{key}.{name}: missing")
        low, high = _number(key, "low", spec["low"]), _number(key, "high", spec["high"])
        if not low < high:
            raise SearchSpaceError(f"{key}: low ({low}) must be < high ({high})")
        log = kind == "loguniform" or bool(spec.get("log", False))
        if log and low <= 0:
            raise SearchSpaceError(f"{key}.low: must be > 0 for a log scale, got {low}")
        step = spec.get("step")
        if step is not None:
            step = _number(key, "step", step)
            if step <= 0:
                raise SearchSpaceError(f"{key}.step: must be > 0, got {step}")
            if log:
                raise SearchSpaceError(f"{key}.step: cannot be combined with a log scale")
        if kind == "int":
            if not (float(low).is_integer() and float(high).is_integer()):
                raise SearchSpaceError(f"{key}: int bounds must be whole numbers, got {low}, {high}")
            low, high = int(low), int(high)
            step = int(step) if step is not None else 1
        low, high = _checked(key, low, check_value), _checked(key, high, check_value)
        if kind != "int" and isinstance(low, int) and isinstance(high, int):
            # A float distribution would sample 2.37 for an integer key such as depth.
            raise SearchSpaceError(f"{key}.type: {key} takes integers; use type int or categorical, not {kind}")
        out.update(low=low, high=high, log=log, step=step)
        values = [low, high]
    _check_depth(key, values, patch_size)
    return out


def _checked(key: str, value: Any, check_value: ValueCheck | None) -> Any:
    if check_value is None:
        return value
    try:
        return check_value(key, value)
    except ValueError as exc:
        raise SearchSpaceError(str(exc)) from None


def _check_depth(key: str, values: list[Any], patch_size: int | None) -> None:
    if key == "depth" and patch_size:
        bad = [d for d in range(min(values), max(values) + 1) if patch_size % (2**d)]
        if bad:
            raise SearchSpaceError(f"depth: {patch_size}-px patches are not divisible by 2**{bad[0]} = {2 ** bad[0]}")


def to_optuna(space: Mapping[str, Mapping[str, Any]]) -> dict[str, BaseDistribution]:
    """Convert a validated search space into Optuna distributions (the define-and-run form)."""
    dists: dict[str, BaseDistribution] = {}
    for key, spec in space.items():
        kind = spec["type"]
        if kind == "categorical":
            dists[key] = CategoricalDistribution(spec["choices"])
        elif kind == "int":
            dists[key] = IntDistribution(spec["low"], spec["high"], log=spec["log"], step=spec["step"])
        else:
            dists[key] = FloatDistribution(spec["low"], spec["high"], log=spec["log"], step=spec["step"])
    return dists


def tpe_startup_trials(budget: int) -> int:
    """Random start-up trials before TPE models the space: a quarter of the budget, at least 4, at most 10.

    With Optuna's default of 10, a sweep of 8 trials per architecture never leaves random search; a
    quarter keeps TPE guiding most of the budget. Below 4, TPE models the space from too few trials: with
    8 trials, 4 start-up trials find a better configuration than 2 (+0.007 to +0.011 IoU over 100
    searcher seeds, with or without ASHA), and at 16 trials 4 is as good as 8 ("Search efficiency" in
    benchmarks/perf/RESULTS.md).
    """
    return max(4, min(10, budget // 4))


def make_sampler(name: str, seed: int, *, budget: int = 40) -> optuna.samplers.BaseSampler:
    """The seeded sampler every architecture's study uses: TPE, or random search as a baseline."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tpe_startup_trials(budget))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SearchSpaceError(f"search.sampler: expected tpe or random, got {name!r}")


def trial_outcome(
    last_result: Mapping[str, Any] | None, *, metric: str, error: bool
) -> tuple[TrialState, float | None]:
    """What to tell Optuna about a finished Ray trial: (state, value).

    Ray's stock searcher reports every trial it did not see fail as COMPLETE with its last score,
    so a trial ASHA stopped after one epoch teaches TPE its truncated score as if it were final.
    Here only a trial whose training loop said ``status == "completed"`` (it ran every epoch) is
    COMPLETE; a diverged or errored trial (Tune's error, or ``status == "error"``: a configuration the
    trial found it cannot run) is FAIL; anything else was stopped early by the scheduler and is PRUNED
    (Optuna keeps its intermediate values, reported per epoch).
    """
    if error:
        return TrialState.FAIL, None
    status = (last_result or {}).get("status")
    if status == "completed":
        value = (last_result or {}).get(metric)
        if value is None or not math.isfinite(float(value)):
            return TrialState.FAIL, None
        return TrialState.COMPLETE, float(value)
    if status in ("diverged", "error"):
        return TrialState.FAIL, None
    return TrialState.PRUNED, None


def stopped_by(last_result: Mapping[str, Any] | None, *, error: bool) -> str:
    """The MLflow ``stopped_by`` tag for a finished trial: completed | asha | diverged | error."""
    if error:
        return "error"
    status = (last_result or {}).get("status")
    if status in ("completed", "diverged", "error"):
        return status
    return "asha"
