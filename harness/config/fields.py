"""Typed fields of a config file: the one place a YAML value is checked against a field's type."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.errors import ConfigError


def coerce(key: str, value: Any, kind: type) -> Any:
    """``value`` as a ``kind`` (bool, int, float, str), or ConfigError naming ``key``.

    Accepts what YAML, JSON, MLflow and a sampler hand over for a field of that type: numpy scalars,
    ints for floats, and numbers written as strings (YAML reads ``1e-3`` without a dot as a string).
    """
    if isinstance(value, np.generic):
        value = value.item()
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: no coercion for {kind.__name__}")
