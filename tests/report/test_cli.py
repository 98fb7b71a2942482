"""Tests of ``python -m harness.report RESULTS_DIR`` (harness.report.__main__), run as a subprocess."""

import os
import subprocess
import sys

import pytest

from tests.test_results import make_results_dir

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    """Run ``python -m harness.report ARGS`` from the repository root; return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "harness.report", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_re_rendering_rewrites_the_report_and_figures(tmp_path):
    root = make_results_dir(tmp_path / "results")
    inputs = {p.name: p.read_bytes() for p in root.iterdir()}
    (root / "report.md").write_text("stale")
    proc = _run(root)
    assert proc.returncode == 0, proc.stderr
    assert str(root / "report.md") in proc.stdout
    assert (root / "report.md").read_text().startswith("# Benchmark report: test-bench")
    assert sorted(p.name for p in (root / "figures").iterdir()) == [
        "budget.png",
        "curves.png",
        "per_image_iou.png",
        "samples.png",
    ]
    assert {name: (root / name).read_bytes() for name in inputs} == inputs  # nothing recomputed or rewritten


@pytest.mark.parametrize("broken", ["missing_dir", "missing_file", "bad_column"])
def test_a_bad_results_directory_exits_3_naming_the_path(tmp_path, broken):
    root = tmp_path / "results"
    if broken != "missing_dir":
        make_results_dir(root, optional=False)
    if broken == "missing_file":
        (root / "summary.csv").unlink()
    if broken == "bad_column":
        (root / "results.csv").write_text("arch,seed\nunet,0\n")
    proc = _run(root)
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: ") and str(root) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (root / "report.md").exists()


def test_help_describes_every_option():
    proc = _run("--help")
    assert proc.returncode == 0
    assert "RESULTS_DIR" in proc.stdout and "results directory written by harness.final_compare" in proc.stdout
