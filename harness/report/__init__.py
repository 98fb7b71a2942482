"""Render a results directory as ``report.md``, ``report.html`` and PNG figures; ``python -m harness.report DIR``.

The report only presents: every number comes from the files of the results directory, read through
:func:`harness.results.load_results` (format: :mod:`harness.results`). Modules: :mod:`.format` (numbers,
tables, display names), :mod:`.style` (the figures' look), :mod:`.figures` (matplotlib), :mod:`.audit`
(the protocol audit's section and figure), :mod:`.methods` (statements of method), :mod:`.markdown` (the
text), :mod:`.html` (the same text as one page with the figures inside, which MLflow's artifact viewer
shows whole).
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.diskspace import write_atomically
from harness.report.figures import render_figures
from harness.report.format import arch_labels
from harness.report.html import render_html
from harness.report.markdown import render_markdown
from harness.results import FIGURES_DIR, REPORT, load_results

__all__ = ["load_results", "write_report"]


def write_report(results_dir: str | os.PathLike) -> Path:
    """Render ``report.md``, ``report.html`` and ``figures/*.png`` into a results directory; return report.md.

    Raises:
        harness.errors.ResultsError: ``results_dir`` is not a readable results directory (a missing
            directory or required file is a ``MissingResultsError``, also a ``FileNotFoundError``).
    """
    res = load_results(results_dir)
    with arch_labels(res.meta.get("arch_labels")):
        figures = render_figures(res, res.root / FIGURES_DIR)
        text = render_markdown(res, figures)
    path = res.root / REPORT
    # Whole files or none: a re-render on a full disk keeps the old report, never half of the new one.
    write_atomically(path, text)
    title = f"Benchmark report: {res.meta.get('benchmark', res.root.name)}"
    write_atomically(path.with_suffix(".html"), render_html(text, res.root, title))
    return path
