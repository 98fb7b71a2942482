"""Render a results directory as ``report.md`` plus PNG figures; ``python -m harness.report DIR`` re-renders one.

The report only presents: every number comes from the files of the results directory, read through
:func:`harness.results.load_results` (format: :mod:`harness.results`). Modules: :mod:`.format` (numbers,
tables, display names), :mod:`.figures` (matplotlib), :mod:`.markdown` (the text).
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.report.figures import render_figures
from harness.report.markdown import render_markdown
from harness.results import FIGURES_DIR, REPORT, load_results

__all__ = ["load_results", "write_report"]


def write_report(results_dir: str | os.PathLike) -> Path:
    """Render ``report.md`` and ``figures/*.png`` into a results directory; return the report's path.

    Raises:
        harness.results.ResultsError: ``results_dir`` is not a readable results directory (a missing
            directory or required file is also a ``FileNotFoundError``).
    """
    res = load_results(results_dir)
    figures = render_figures(res, res.root / FIGURES_DIR)
    path = res.root / REPORT
    path.write_text(render_markdown(res, figures), encoding="utf-8")
    return path
