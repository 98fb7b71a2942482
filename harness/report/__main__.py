"""``python -m harness.report RESULTS_DIR``: re-render a results directory's report without retraining.

Exit status: 0 when ``report.md`` and its figures were written; 3 when RESULTS_DIR is not a readable
results directory (the error, naming the path, goes to stderr); 2 for a usage error (argparse's own).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import ResultsError
from harness.report import write_report

EXIT_BAD_RESULTS = 3


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of ``python -m harness.report``."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.report",
        description="Re-render report.md and figures/*.png of a final-comparison results directory "
        "from the files already in it (nothing is retrained or recomputed).",
    )
    parser.add_argument(
        "results_dir",
        metavar="RESULTS_DIR",
        type=Path,
        help="results directory written by harness.final_compare (holds meta.json, results.csv, "
        "summary.csv, paired.csv); the report and figures are (over)written inside it",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        path = write_report(args.results_dir)
    except ResultsError as err:
        # A wrong path is a user error, not a bug: one line on stderr, no traceback.
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_RESULTS
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
