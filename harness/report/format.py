"""Number formatting, Markdown tables and architecture display names shared by the report's text and figures."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping

import pandas as pd

from harness.models import get_model_spec, list_models

MISSING = "n/a"
# The display names of the results directory being rendered (its meta.json's arch_labels, which compare
# wrote from the model registry), so a report re-rendered elsewhere keeps the names it was made with.
_LABELS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("arch_labels", default=None)


@contextlib.contextmanager
def arch_labels(labels: Mapping[str, str] | None) -> Iterator[None]:
    """Within the block, :func:`label` takes display names from ``labels`` first."""
    token = _LABELS.set(dict(labels or {}))
    try:
        yield
    finally:
        _LABELS.reset(token)


def label(arch: str) -> str:
    """The display name of an architecture: the rendered results' own, else the registry's, else its key."""
    names = _LABELS.get() or {}
    if arch in names:
        return names[arch]
    return get_model_spec(arch).label if arch in list_models() else arch


def is_missing(x) -> bool:
    """Return True for None and NaN (pandas' or float's), the "undefined" values of a results directory."""
    return x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x)


def fmt_int(x) -> str:
    """Format a count with thousands separators (``2,166,535``)."""
    return MISSING if is_missing(x) else f"{round(float(x)):,d}"


def fmt_rate(x, digits: int = 4) -> str:
    """Format a rate or score with a fixed number of decimals (``0.9312``)."""
    return MISSING if is_missing(x) else f"{float(x):.{digits}f}"


def fmt_signed(x, digits: int = 4) -> str:
    """Format a difference with an explicit sign (``+0.0123``)."""
    return MISSING if is_missing(x) else f"{float(x):+.{digits}f}"


def fmt_p(p) -> str:
    """Format a p-value: three decimals, scientific below 0.001."""
    if is_missing(p):
        return MISSING
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_ci(est, low, high, digits: int = 4) -> str:
    """Format an estimate with its interval (``0.9 [0.8, 1.0]``), or ``(no CI)`` when a bound is missing."""
    if is_missing(low) or is_missing(high):
        return f"{fmt_rate(est, digits)} (no CI)"
    return f"{fmt_rate(est, digits)} [{fmt_rate(low, digits)}, {fmt_rate(high, digits)}]"


def fmt_value(x) -> str:
    """Format a config value: 4 significant digits for floats, the rest as written."""
    if isinstance(x, float):
        return f"{x:.4g}"
    return MISSING if x is None else str(x)


def md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """Render a Markdown table; ``align`` has one character per column, ``l`` or ``r`` (default: l then r...)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)
