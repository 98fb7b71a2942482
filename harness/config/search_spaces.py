"""A benchmark's search spaces, loaded and checked against the typed training config before Ray starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config.train import SEARCHABLE_KEYS, TrainConfig, check_value
from harness.errors import ConfigError, SearchSpaceError
from harness.models import MODELS
from harness.sweep.sampling import load_search_space

if TYPE_CHECKING:
    from harness.config.benchmark import Benchmark


def load_search_spaces(value: Any, b: Benchmark, base_dir: Path | None) -> dict[str, dict[str, dict[str, Any]]]:
    """The ``search_spaces`` section: each listed architecture's space (file or mapping), checked against its config.

    Every choice and both bounds of every range are checked with :class:`TrainConfig`'s own field checks and
    must make a valid config with the benchmark's fixed values, so a bad categorical fails here, at load.
    """
    value = value or {}
    if not isinstance(value, dict):
        raise ConfigError("search_spaces: expected a mapping of architecture -> file or mapping")
    # A space for a known architecture left out of `architectures` is ignored, so that
    # `--set architectures=[unet]` narrows a benchmark without editing its search spaces.
    extra = sorted(set(value) - set(MODELS))
    if extra:
        raise ConfigError(f"search_spaces.{extra[0]}: unknown architecture; valid: {', '.join(MODELS)}")
    patch_size = (b.data.synthetic or {}).get("patch_size")
    spaces = {}
    for arch in b.architectures:
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
        _check_combinations(key, b.trial_config(arch), spaces[arch])
    return spaces


def _check_combinations(where: str, base: TrainConfig, space: dict[str, dict[str, Any]]) -> None:
    """Each sampled value must make a valid config with the fixed ones (deep supervision needs unetpp)."""
    for key, spec in space.items():
        for value in spec.get("choices") or (spec["low"], spec["high"]):
            try:
                dataclasses.replace(base, **{key: value})
            except ConfigError as exc:
                raise ConfigError(f"{where}.{key}: {value!r} does not fit the {base.arch} config: {exc}") from None
