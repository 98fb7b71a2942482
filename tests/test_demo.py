"""`python -m harness.demo` end to end (shrunk by overrides), as the README's first command runs it."""

import subprocess
import sys
from pathlib import Path

SHRINK = {
    "data.synthetic": "{scenes: 6, patch_size: 32, seed: 1, test_scenes: 1, grid: [6, 6]}",
    "train.epochs": 2,
    "asha.grace_period": 1,
    "search.num_samples": 2,
    "compare.seeds": "[1, 2]",  # fresh: train.seed 0 selected the configs
    "compare.samples_in_figure": 2,
    "compare.bootstrap_samples": 200,
}


def test_demo_runs_sweep_and_comparison(ray_cluster, tmp_path):
    cmd = [sys.executable, "-m", "harness.demo", "--address", ray_cluster.address]
    for key, value in SHRINK.items():
        cmd += ["--set", f"{key}={value}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    report_line = next(line for line in out if line.startswith("  report:"))
    report = Path(report_line.split(":", 1)[1].strip())
    assert report.is_file() and report.is_relative_to(tmp_path / "runs" / "demo")
    assert "U-Net" in report.read_text() and "UNet++" in report.read_text()
    assert "mlflow ui --backend-store-uri sqlite:///" in proc.stdout
    # The console tells the answer: both summaries, the verdict, where the Optuna study is; none of Tune's noise.
    assert any(line.startswith("Sweep demo-") for line in out) and any(line.startswith("Verdict: ") for line in out)
    assert any(line.startswith("  Optuna:   optuna-dashboard sqlite:///") for line in out)
    for noise in ("== Status ==", "/infinite", "Result logdir", "Checkpoint successfully created"):
        assert noise not in proc.stdout + proc.stderr, noise
    assert len(out) < 60, proc.stdout  # two trials per architecture: status lines, two tables, two summaries
