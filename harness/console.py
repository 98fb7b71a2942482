"""What the commands print: one verbosity for the whole process, and plain-text tables.

``--quiet`` / ``--verbose`` on every command set the level (:func:`set_verbosity`); the parts that print
(the sweep's trial table, the progress bars, the closing summaries) ask :func:`verbosity`. At ``QUIET`` only
the closing summary and errors are printed; at ``NORMAL`` one progress line per architecture while it
sweeps and a trial table when it ends; at ``VERBOSE`` the trial table at every report, Tune's own trial
messages and every library's INFO log. A light module: no torch, no ray.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL

#: Loggers whose INFO lines are noise on a normal console (each sweep's "A new study created", MLflow's
#: database set-up, Ray Train's "Checkpoint successfully created at ..." once per epoch and trial).
CHATTY_LOGGERS = ("optuna", "mlflow", "alembic", "ray.train", "ray.tune", "filelock")
#: MLflow sets its logger's level from this variable when it is imported (after set_verbosity, often):
#: set here unless the user set it.
_MLFLOW_LEVEL = "MLFLOW_LOGGING_LEVEL"
_USER_SET_MLFLOW_LEVEL = _MLFLOW_LEVEL in os.environ


def set_verbosity(level: int) -> None:
    """Set the process's verbosity (``QUIET``, ``NORMAL`` or ``VERBOSE``) and the log levels that follow from it."""
    global _level
    if level not in (QUIET, NORMAL, VERBOSE):
        raise ValueError(f"verbosity must be {QUIET}, {NORMAL} or {VERBOSE}, got {level!r}")
    _level = level
    logging.getLogger().setLevel(logging.WARNING if level == QUIET else logging.INFO)
    chatty = logging.INFO if level == VERBOSE else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty)
    if not _USER_SET_MLFLOW_LEVEL:
        os.environ[_MLFLOW_LEVEL] = logging.getLevelName(chatty)
    try:  # optuna keeps its own handler and level
        import optuna

        optuna.logging.set_verbosity(chatty)
    except ImportError:  # pragma: no cover - optuna is a dependency
        pass


def verbosity() -> int:
    """The process's verbosity."""
    return _level


def say(text: str = "", *, file: TextIO | None = None) -> None:
    """Print a progress message, unless the process is quiet."""
    if _level > QUIET:
        print(text, file=file or sys.stdout, flush=True)


def summary(text: str = "") -> None:
    """Print part of a command's closing summary: printed at every verbosity, ``--quiet`` included."""
    print(text, flush=True)


def format_value(value: Any) -> str:
    """A table cell: floats with four decimals (scientific below 0.01, four digits from 100), the rest as ``str``."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2e}"
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.4g}"  # scores keep their 4 decimals
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, indent: str = "  ") -> str:
    """``rows`` as a left-aligned plain-text table with a header line; missing cells print as ``-``."""
    cells = [[format_value(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column), *(len(r[i]) for r in cells)]) for i, column in enumerate(columns)]
    lines = [indent + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


__all__ = ["NORMAL", "QUIET", "VERBOSE", "say", "set_verbosity", "summary", "table", "verbosity"]
