"""A benchmark's search spaces: YAML -> validated entries, checked against the typed training config before Ray starts.

A search-space file (or inline mapping) maps a training key to a distribution::

    lr:            {type: loguniform, low: 1.0e-4, high: 1.0e-2}
    depth:         {type: int, low: 2, high: 4}
    base_channels: {type: categorical, choices: [8, 16]}
    weight_decay:  {type: float, low: 0.0, high: 1.0e-3}

Types: ``loguniform`` / ``uniform`` / ``float`` (``log: true`` allowed, ``step`` optional), ``int``
(``log``, ``step``), ``categorical`` (``choices``); a bare value fixes the key.

Ray Tune's search-space words are read where they mean the same Optuna distribution
(:data:`RAY_ALIASES`), with Ray's argument names (``lower``/``upper``, ``categories``, ``q``, ``base``) and
Ray's meaning: ``choice`` is ``categorical``; ``randint``/``lograndint`` exclude ``upper`` as Ray does (so
``{type: randint, lower: 1, upper: 4}`` is ``{type: int, low: 1, high: 3}``); ``qrandint`` and
``quniform`` round to multiples of ``q`` with ``upper`` included, which is Optuna's ``step`` when ``lower``
is a multiple of ``q``. Words with no Optuna equivalent (``qloguniform``, ``qlograndint``, ``randn``,
``qrandn``, ``grid_search``, ``sample_from``) are refused with what to write instead. :func:`load_search_space`
reads one space, :func:`load_search_spaces` a benchmark's ``search_spaces`` section. No Optuna here:
:func:`harness.sweep.sampling.to_optuna` turns a validated space into Optuna distributions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from harness.config.train import SEARCHABLE_KEYS, TrainConfig, check_value
from harness.errors import ConfigError, SearchSpaceError
from harness.models import list_models

_TYPES = {"loguniform", "uniform", "float", "int", "categorical"}
_FIELDS = {
    "loguniform": {"type", "low", "high", "step", "log"},
    "uniform": {"type", "low", "high", "step", "log"},
    "float": {"type", "low", "high", "step", "log"},
    "int": {"type", "low", "high", "step", "log"},
    "categorical": {"type", "choices"},
}
#: Ray Tune's words read as one of ours: word -> (our type, whether Ray's ``upper`` is exclusive, log scale).
RAY_ALIASES = {
    "choice": ("categorical", False, False),
    "randint": ("int", True, False),
    "lograndint": ("int", True, True),
    "qrandint": ("int", False, False),
    "quniform": ("float", False, False),
}
#: Ray Tune's words with no Optuna distribution that means the same, and what to write instead.
RAY_REFUSED = {
    "qloguniform": "Optuna has no quantized log scale (a step cannot be combined with log): write "
    "{type: loguniform, low: .., high: ..} without q, or {type: categorical, choices: [...]} with the values",
    "qlograndint": "Optuna has no quantized log scale: write {type: int, low: .., high: .., log: true} without q, "
    "or {type: categorical, choices: [...]}",
    "randn": "Optuna has no normal distribution: write {type: uniform, low: .., high: ..} over the range you "
    "want searched",
    "qrandn": "Optuna has no normal distribution: write {type: float, low: .., high: .., step: ..}",
    "grid_search": "a grid is not what TPE samples: write {type: categorical, choices: [...]} (TPE searches "
    "those values), or search.sampler: random for a baseline",
    "sample_from": f"a function cannot be written in YAML nor given to Optuna: write one of {sorted(_TYPES)}",
}
#: ``check_value(key, value) -> value``: coerces a value to its field's type or raises ValueError.
ValueCheck = Callable[[str, Any], Any]


def load_search_spaces(
    value: Any,
    *,
    architectures: Iterable[str],
    trial_config: Callable[[str], TrainConfig],
    patch_size: int | None,
    base_dir: Path | None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """The ``search_spaces`` section: each listed architecture's space (file or mapping), checked against its config.

    ``trial_config(arch)`` is the benchmark's base config of ``arch``. Every choice and both bounds of every
    range are checked with :class:`TrainConfig`'s own field checks and must make a valid config with the
    benchmark's fixed values, so a bad categorical fails here, at load. ``patch_size`` (when known) refuses
    depths whose 2**depth does not divide the patches.
    """
    value = value or {}
    if not isinstance(value, dict):
        raise ConfigError("search_spaces: expected a mapping of architecture -> file or mapping")
    # A space for a known architecture left out of `architectures` is ignored, so that
    # `--set architectures=[unet]` narrows a benchmark without editing its search spaces.
    extra = sorted(set(value) - set(list_models()))
    if extra:
        raise ConfigError(f"search_spaces.{extra[0]}: unknown architecture; valid: {', '.join(list_models())}")
    spaces = {}
    for arch in architectures:
        entry = value.get(arch)
        key = f"search_spaces.{arch}"
        if entry is None:
            raise ConfigError(f"{key}: missing; every architecture needs a search space (file or mapping)")
        try:
            spaces[arch] = load_search_space(
                entry,
                base_dir=base_dir,
                allowed_keys=SEARCHABLE_KEYS,
                patch_size=patch_size,
                check_value=check_value,
            )
        except SearchSpaceError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        _check_combinations(key, trial_config(arch), spaces[arch])
    return spaces


def _check_combinations(where: str, base: TrainConfig, space: dict[str, dict[str, Any]]) -> None:
    """Each sampled value must make a valid config with the fixed ones (deep supervision needs unetpp)."""
    for key, spec in space.items():
        for value in spec.get("choices") or (spec["low"], spec["high"]):
            try:
                dataclasses.replace(base, **{key: value})
            except ConfigError as exc:
                raise ConfigError(f"{where}.{key}: {value!r} does not fit the {base.arch} config: {exc}") from None


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


def from_ray_words(key: str, spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """A spec written with Ray Tune's words (:data:`RAY_ALIASES`) as the same distribution in ours; others unchanged.

    Raises :class:`SearchSpaceError` for a Ray word with no Optuna equivalent (:data:`RAY_REFUSED`), saying
    what to write instead; ``{grid_search: [...]}``, Ray's grid as a mapping, is one.
    """
    if "type" not in spec and "grid_search" in spec:
        raise SearchSpaceError(f"{key}: grid_search is not supported: {RAY_REFUSED['grid_search']}")
    kind = spec.get("type")
    if kind in RAY_REFUSED:
        raise SearchSpaceError(f"{key}.type: {kind} (Ray Tune) is not supported: {RAY_REFUSED[kind]}")
    spec = dict(spec)
    # Ray's argument names, also with our types (a Ray user writes loguniform with lower/upper).
    for ray_name, ours in (("lower", "low"), ("upper", "high"), ("categories", "choices")):
        if ray_name in spec:
            if ours in spec:
                raise SearchSpaceError(f"{key}: give {ours} or {ray_name} (Ray Tune's name), not both")
            spec[ours] = spec.pop(ray_name)
    if kind in ("loguniform", "lograndint") and "base" in spec:
        # A log-uniform distribution is the same whatever the logarithm's base: Ray's base changes nothing.
        base = _number(key, "base", spec.pop("base"))
        if base <= 1:
            raise SearchSpaceError(f"{key}.base: must be > 1, got {base}")
    if kind not in RAY_ALIASES:
        return spec
    ours, exclusive, log = RAY_ALIASES[kind]
    spec["type"] = ours
    if ours == "categorical":
        return spec
    if log:
        spec["log"] = True
    if "q" in spec:
        q = _number(key, "q", spec.pop("q"))
        low = _number(key, "low", spec.get("low", 0))
        if q <= 0 or not float(low / q).is_integer():
            raise SearchSpaceError(
                f"{key}: {kind} rounds to multiples of q={q}, and lower={low} is not one: Optuna's step counts "
                f"from low; make lower a multiple of q, or write {{type: {ours}, low: .., high: .., step: ..}}"
            )
        spec["step"] = int(q) if ours == "int" and float(q).is_integer() else q
    if exclusive and "high" in spec:
        high = _number(key, "high", spec["high"])
        if not float(high).is_integer():
            raise SearchSpaceError(f"{key}.upper: {kind} takes whole numbers, got {high}")
        spec["high"] = int(high) - 1  # Ray's randint(lower, upper) never draws upper
    return spec


def _validate_entry(key: str, spec: Any, patch_size: int | None, check_value: ValueCheck | None) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        # A bare value fixes the key: handy for "this architecture always uses X".
        spec = {"type": "categorical", "choices": [spec]}
    spec = from_ray_words(key, spec)
    kind = spec.get("type")
    if kind not in _TYPES:
        raise SearchSpaceError(
            f"{key}.type: expected one of {sorted(_TYPES)} (or Ray Tune's {', '.join(RAY_ALIASES)}), got {kind!r}"
        )
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
