"""`python -m harness.data ...` as a user runs it (subprocesses, real files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from harness.data.cache import open_cache
from harness.data.layout import discover_patches
from harness.data.splits import manifest_sha256, read_manifest
from harness.data.synth import TRAIN_DIR

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "harness.data", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_synth_verify_ingest_split_preview(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    done = run("synth", "--out", str(data), "--scenes", "3", "--patch-size", "16", "--seed", "4")
    assert done.returncode == 0, done.stderr
    assert (data / TRAIN_DIR / "train_red").is_dir() and (data / "38-Cloud_test" / "test_nir").is_dir()

    done = run("verify", "--root", str(data), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(discover_patches(data))} patches" in done.stdout

    done = run("ingest", "--root", str(data), "--cache", str(cache), "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "ingest" in done.stderr  # the progress bar goes to stderr
    opened = open_cache(cache)
    assert len(opened) == len(discover_patches(data, subset="train")) and opened.images.shape[1:] == (4, 16, 16)

    done = run("split", "--cache", str(cache), "--kind", "random", "--seed", "1")
    assert done.returncode == 0, done.stderr
    path = cache / "split-random-0.6-0.2-0.2-seed1.csv"
    assert manifest_sha256(read_manifest(path)) in done.stdout

    done = run("preview", "--root", str(data), "--out", str(tmp_path / "p.png"), "--patches", "2")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_broken_tree_lists_every_problem_and_exits_non_zero(synthetic_root, copy_tree, tmp_path):
    root = copy_tree(synthetic_root / TRAIN_DIR)
    patches = discover_patches(root)
    gone = patches[0].bands["green"]
    gone.unlink()
    cut = patches[1].bands["nir"]
    cut.write_bytes(cut.read_bytes()[:100])

    done = run("verify", "--root", str(root), "--quiet")
    assert done.returncode == 3
    assert str(gone) in done.stdout and str(cut) in done.stdout
    assert "2 problem(s)" in done.stderr

    done = run("ingest", "--root", str(root), "--cache", str(tmp_path / "cache"), "--quiet")
    assert done.returncode == 3
    assert str(gone) in done.stdout and str(cut) in done.stdout
    assert not (tmp_path / "cache").exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_bad_values_exit_3_and_usage_errors_2_with_the_reason(synthetic_cache):
    done = run("split", "--cache", str(synthetic_cache), "--fractions", "0.6,0.3,0.3")
    assert done.returncode == 3 and "sum to 1" in done.stderr
    done = run("split", "--cache", str(synthetic_cache), "--fractions", "0.6,-0.2,0.6")
    assert done.returncode == 3 and "fractions[1] (val)" in done.stderr
    done = run("frobnicate")
    assert done.returncode == 2
    assert np.load(synthetic_cache / "images.npy", mmap_mode="r").shape[1] == 4
