"""Benchmark files: YAML (safe_load) -> validated dataclasses, with ``--set key.sub=value`` overrides.

A benchmark file says what data to use, how to split it, what every trial trains with, which
architectures compete, each one's search space, and the budget (trials, ASHA, resources) that every
architecture gets alike. Everything is validated here, before Ray or MLflow is touched, and every
error names the offending key (``train.epochs``) or file.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.config.fields import coerce
from harness.config.search_spaces import load_search_spaces
from harness.config.train import TrainConfig, check_value
from harness.errors import ConfigError
from harness.models import list_models

SPLIT_KINDS = ("scene", "random")
SAMPLERS = ("tpe", "random")


@dataclass(frozen=True)
class DataConfig:
    """Where the patches come from: a dataset ``root`` or a ``synthetic`` generator section."""

    root: str | None = None
    synthetic: dict[str, Any] | None = None
    cache_dir: str = "runs/cache"


@dataclass(frozen=True)
class SplitConfig:
    """A seeded split: ``scene`` (grouped by scene id, default) or ``random`` (over patches)."""

    kind: str = "scene"
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    nonempty_only: bool = True


@dataclass(frozen=True)
class SearchConfig:
    """The per-architecture budget: trials, sampler (seeded TPE, or random as a baseline), concurrency.

    ``study_database``: an Optuna RDB URL (``postgresql://…``) for the studies; unset, they live in the
    sweep's storage as ``optuna.db`` (formerly ``search.storage``, still read with a deprecation warning).
    ``device_hours``: a compute budget per architecture besides the trial cap (equal trials are not equal
    compute: UNet++ costs 1.4-2.5x U-Net's FLOPs); no trial starts once an architecture's trials have used
    that many device-hours (GPU-hours with ``resources.gpu`` > 0, else CPU-core-hours: trial seconds x
    per-trial resources). ``parallel_architectures``: how many architectures' Tuners run at once, each in
    a driver process of its own on the same Ray cluster (1: one after another); more than one where
    ``max_concurrent`` trials of one architecture leave the cluster's devices idle.
    """

    num_samples: int = 8
    seed: int = 0
    max_concurrent: int = 2
    sampler: str = "tpe"
    study_database: str | None = None
    device_hours: float | None = None
    parallel_architectures: int = 1


@dataclass(frozen=True)
class AshaConfig:
    """ASHA over epochs; ``max_t`` is ``train.epochs``. ``enabled: false`` runs every trial to the end."""

    grace_period: int = 1
    reduction_factor: int = 2
    enabled: bool = True


@dataclass(frozen=True)
class ResourcesConfig:
    """Per-trial resources; ``gpu`` may be fractional (several trials per GPU)."""

    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class FailureConfig:
    """How often a failed trial is retried from its last checkpoint."""

    max_failures: int = 2


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking URI and experiment name (``sqlite:///mlflow.db`` is what ``mlflow ui`` opens)."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "cloudmask"
    #: Seconds between samples of each trial's system metrics (CPU, memory, GPU; MLflow ``system/*``); 0: off.
    system_metrics_s: float = 10.0


@dataclass(frozen=True)
class CompareConfig:
    """The final comparison: paired seeds and (optionally) a different epoch count."""

    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)  # fresh: not TrainConfig's default seed 0 (see _validate)
    epochs: int | None = None
    samples_in_figure: int = 6
    bootstrap_samples: int = 10000
    #: Register each architecture's best retrain in MLflow's model registry as ``<name>-<arch>`` (null: log only).
    register_models: str | None = None
    #: A folder holding 38-Cloud_test/ (test bands, Entire_scene_gts/): each retrain is also scored on it by the
    #: dataset's official scene protocol (``harness.predict.evaluate``), beside the harness's own.
    official_test: str | None = None


@dataclass(frozen=True)
class RayConfig:
    """Options for the private local Ray instance (ignored when joining a cluster)."""

    num_cpus: int | None = None
    num_gpus: int | None = None


@dataclass(frozen=True)
class Benchmark:
    """A whole, validated benchmark definition."""

    name: str
    data: DataConfig
    split: SplitConfig
    train: TrainConfig
    architectures: tuple[str, ...]
    search_spaces: dict[str, dict[str, dict[str, Any]]]
    search: SearchConfig
    asha: AshaConfig
    resources: ResourcesConfig
    failure: FailureConfig
    tracking: TrackingConfig
    compare: CompareConfig
    ray: RayConfig
    storage: str
    source: str | None = None

    def trial_config(self, arch: str) -> TrainConfig:
        """What every trial of ``arch`` trains with before its search space's sampled values."""
        return dataclasses.replace(self.train, arch=arch)

    def prepare_args(self) -> dict[str, Any]:
        """Keyword arguments of :func:`harness.data.prepare.prepare_data` for this benchmark (absolute paths)."""
        return {
            "root": str(Path(self.data.root).resolve()) if self.data.root else None,
            # An empty synthetic section means "the generator's defaults", not "no data".
            "synthetic": dict(self.data.synthetic) if self.data.synthetic is not None else None,
            "cache_dir": str(Path(self.data.cache_dir).resolve()),
            "split_kind": self.split.kind,
            "fractions": tuple(self.split.fractions),
            "split_seed": self.split.seed,
            "nonempty_only": self.split.nonempty_only,
        }

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-serialisable dict of the resolved benchmark (logged as an artifact)."""
        out = dataclasses.asdict(self)
        out.pop("source")
        out["split"]["fractions"] = list(self.split.fractions)
        out["compare"]["seeds"] = list(self.compare.seeds)
        out["architectures"] = list(self.architectures)
        out["train"].pop("arch")
        return out


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "split": SplitConfig,
    "train": TrainConfig,
    "search": SearchConfig,
    "asha": AshaConfig,
    "resources": ResourcesConfig,
    "failure": FailureConfig,
    "tracking": TrackingConfig,
    "compare": CompareConfig,
    "ray": RayConfig,
}
_TOP_LEVEL = {"name", "architectures", "search_spaces", "storage", *_SECTIONS}

#: Types of the fields whose default is None (unset).
_OPTIONAL_TYPES: dict[str, type] = {
    "data.root": str,
    "data.synthetic": dict,
    "compare.epochs": int,
    "search.study_database": str,
    "search.device_hours": float,
    "compare.register_models": str,
    "compare.official_test": str,
    "ray.num_cpus": int,
    "ray.num_gpus": int,
}


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``key.sub=value`` into its key path and YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML: {exc}") from None
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with every ``key.sub=value`` override applied."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return out


def load_benchmark(path: str | Path, overrides: list[str] | None = None) -> Benchmark:
    """Read, override and validate a benchmark YAML file; raise ConfigError naming any bad key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"benchmark file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw = apply_overrides(raw, overrides or [])
    try:
        return benchmark_from_dict(raw, base_dir=path.parent, source=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{_blame(str(exc), overrides or [], path)}: {exc}") from None


def _blame(message: str, overrides: list[str], path: Path) -> str:
    """Where a bad value came from: the override that set the key the message names, else the file."""
    key = message.split(":", 1)[0].strip()
    for text in reversed(overrides):  # the last override of a key is the one in effect
        set_key = text.split("=", 1)[0].strip()
        if key == set_key or key.startswith(f"{set_key}.") or set_key.startswith(f"{key}."):
            return f"override {text!r} (command line, over {path})"
    return str(path)


def benchmark_from_dict(raw: dict[str, Any], *, base_dir: Path | None = None, source: str | None = None):
    """Validate a benchmark mapping (as read from YAML) into a :class:`Benchmark`."""
    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_TOP_LEVEL))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ConfigError(f"name: expected a non-empty string without spaces or slashes, got {name!r}")
    sections = {key: _section(key, cls, raw.get(key)) for key, cls in _SECTIONS.items()}
    bench = Benchmark(
        name=name,
        architectures=_architectures(raw.get("architectures")),
        search_spaces={},
        storage=str(raw.get("storage") or f"runs/{name}"),
        source=source,
        **sections,
    )
    _validate(bench)
    spaces = load_search_spaces(
        raw.get("search_spaces"),
        architectures=bench.architectures,
        trial_config=bench.trial_config,
        patch_size=(bench.data.synthetic or {}).get("patch_size"),
        base_dir=base_dir,
    )
    return dataclasses.replace(bench, search_spaces=spaces)


def _section(key: str, cls: type, value: Any):
    if value is None:
        return cls()
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    if cls is TrainConfig:
        if "arch" in value:
            raise ConfigError("train.arch: not a train key; list the networks under `architectures`")
        # TrainConfig owns its fields' types and values: checked key by key so the error names the key.
        try:
            checked = {name: check_value(name, val) for name, val in value.items()}
        except ConfigError as exc:
            raise ConfigError(f"train.{exc}") from None
        return TrainConfig(**checked)
    if cls is SearchConfig:
        value = _renamed_search_keys(value)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key; valid: {', '.join(fields)}")
    defaults = cls()
    return cls(**{name: _typed(f"{key}.{name}", val, getattr(defaults, name)) for name, val in value.items()})


#: Keys of the search section renamed since they were introduced: old name -> new name.
RENAMED_SEARCH_KEYS = {"storage": "study_database"}


def _renamed_search_keys(value: dict[str, Any]) -> dict[str, Any]:
    """The search section with its renamed keys under their new names, each with a deprecation warning."""
    value = dict(value)
    for old, new in RENAMED_SEARCH_KEYS.items():
        if old not in value:
            continue
        if new in value:
            raise ConfigError(f"search.{old}: renamed search.{new}; give only search.{new}")
        warnings.warn(
            f"search.{old} is deprecated: it names the Optuna study database, now search.{new} "
            f"(the sweep's own storage is the top-level `storage`); search.{old} is read as search.{new}",
            FutureWarning,
            stacklevel=2,
        )
        value[new] = value.pop(old)
    return value


def _typed(key: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of the field's default (optional fields: ``_OPTIONAL_TYPES``)."""
    if value is None:
        return value
    if default is None:
        kind = _OPTIONAL_TYPES[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, kind) or (kind in (int, float) and value < 0):
            expected = {int: "a non-negative integer", float: "a number", str: "a string", dict: "a mapping"}[kind]
            raise ConfigError(f"{key}: expected {expected} or null, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(value)
    return coerce(key, value, type(default))


def _architectures(value: Any) -> tuple[str, ...]:
    if value is None:
        return tuple(list_models())
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"architectures: expected a non-empty list of names, got {value!r}")
    for arch in value:
        if arch not in list_models():
            raise ConfigError(f"architectures: unknown architecture {arch!r}; valid: {', '.join(list_models())}")
    if len(set(value)) != len(value):
        raise ConfigError(f"architectures: duplicate entries in {value!r}")
    return tuple(value)


def _validate(b: Benchmark) -> None:
    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    need((b.data.root is None) != (b.data.synthetic is None), "data", "set exactly one of root or synthetic")
    if b.data.synthetic is not None:
        allowed = {"scenes", "patch_size", "seed", "test_scenes", "additional_scenes", "grid"}
        extra = sorted(set(b.data.synthetic) - allowed)
        need(not extra, f"data.synthetic.{extra[0] if extra else ''}", f"unknown key; valid: {sorted(allowed)}")
        for k, v in b.data.synthetic.items():
            values = v if k == "grid" and isinstance(v, list) and len(v) == 2 else [v]
            need(
                all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in values),
                f"data.synthetic.{k}",
                f"expected a non-negative integer{' pair [rows, cols]' if k == 'grid' else ''}, got {v!r}",
            )
    need(b.split.kind in SPLIT_KINDS, "split.kind", f"expected one of {SPLIT_KINDS}, got {b.split.kind!r}")
    fr = b.split.fractions
    need(
        len(fr) == 3 and all(isinstance(x, int | float) and x >= 0 for x in fr),
        "split.fractions",
        f"expected three non-negative numbers (train, val, test), got {list(fr)!r}",
    )
    need(abs(sum(fr) - 1.0) < 1e-6, "split.fractions", f"must sum to 1, got {list(fr)!r} (sum {sum(fr):g})")
    need(fr[0] > 0 and fr[1] > 0 and fr[2] > 0, "split.fractions", "train, val and test must all be > 0")
    t = b.train  # TrainConfig checked its own fields
    need(b.search.num_samples >= 1, "search.num_samples", "must be >= 1")
    need(b.search.max_concurrent >= 1, "search.max_concurrent", "must be >= 1")
    need(b.search.parallel_architectures >= 1, "search.parallel_architectures", "must be >= 1")
    need(
        b.search.device_hours is None or b.search.device_hours > 0,
        "search.device_hours",
        "must be > 0 (or null: trials alone are the budget)",
    )
    need(b.search.sampler in SAMPLERS, "search.sampler", f"expected one of {SAMPLERS}, got {b.search.sampler!r}")
    need(b.asha.grace_period >= 1, "asha.grace_period", "must be >= 1")
    need(
        b.asha.grace_period <= t.epochs,
        "asha.grace_period",
        f"({b.asha.grace_period}) must not exceed train.epochs ({t.epochs})",
    )
    need(b.asha.reduction_factor >= 2, "asha.reduction_factor", "must be >= 2")
    need(b.resources.cpu > 0, "resources.cpu", "must be > 0")
    need(b.resources.gpu >= 0, "resources.gpu", "must be >= 0")
    need(
        b.resources.gpu <= 1 or float(b.resources.gpu).is_integer(),
        "resources.gpu",
        "a fraction must be <= 1 (several trials share a GPU) or a whole number",
    )
    need(b.failure.max_failures >= 0, "failure.max_failures", "must be >= 0")
    need(bool(b.tracking.uri), "tracking.uri", "must not be empty")
    need(bool(b.tracking.experiment), "tracking.experiment", "must not be empty")
    need(b.tracking.system_metrics_s >= 0, "tracking.system_metrics_s", "must be >= 0 (0 turns them off)")
    seeds = b.compare.seeds
    need(
        len(seeds) >= 1 and all(isinstance(s, int) for s in seeds),
        "compare.seeds",
        f"expected a non-empty list of integers, got {seeds!r}",
    )
    need(len(set(seeds)) == len(seeds), "compare.seeds", f"duplicate seeds in {seeds!r}")
    # Every trial trains with train.seed, so the chosen config was selected on that seed: retraining it
    # with the same seed reproduces the selected trial, whose score carries the selection's luck.
    need(
        t.seed not in seeds,
        "compare.seeds",
        f"must not include train.seed ({t.seed}), the seed the sweep selected configurations with; "
        "retrain on fresh seeds",
    )
    need(b.compare.epochs is None or b.compare.epochs >= 1, "compare.epochs", "must be >= 1")
