"""Tests of harness.results: the results-directory schema and its loader.

:func:`make_results_dir` (a small, hand-made but self-consistent results directory) is shared with the
report tests, which import it from here.
"""

import json
import re

import numpy as np
import pandas as pd
import pytest

from harness.compare import tables
from harness.errors import MissingResultsError, ResultsError
from harness.metrics import cloud_free_counts, confusion_stats
from harness.results import COLUMNS, OPTIONAL_FILES, REQUIRED_FILES, Results, load_results

ARCHS = ["unet", "unetpp"]
SEEDS = [0, 1, 2]
# Test-set counts (tp, fn, fp, tn) per (arch, seed), chosen by hand; 24 images of 16x16 = 6144 pixels.
COUNTS = {
    ("unet", 0): (2900, 110, 140, 2994),
    ("unet", 1): (2870, 140, 120, 3014),
    ("unet", 2): (2910, 100, 160, 2974),
    ("unetpp", 0): (2800, 210, 230, 2904),
    ("unetpp", 1): (2850, 160, 260, 2874),
    ("unetpp", 2): (2760, 250, 190, 2944),
}
N_IMAGES, SIZE = 24, 16
# Cloud-free test images (ground truth without cloud) besides the N_IMAGES with cloud: no per-image IoU.
N_CLOUD_FREE = 4


def _blobs(rng, k, size):
    """Return ``k`` cloud fields of ``size`` x ``size``, a few soft-edged blobs each (threshold for masks)."""
    yy, xx = np.mgrid[:size, :size]
    field = np.zeros((k, size, size))
    for i in range(k):
        for _ in range(3):
            cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 8, size / 3)
            field[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    return field


def make_results_dir(root, *, shift=0.05, optional=True, archs=ARCHS, seed=0):
    """Write a results directory in harness.results' format under ``root`` and return ``root``.

    ``shift`` is how much better unet is per image (0: every architecture gets unet's numbers);
    ``optional=False`` writes only the required files.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    results = pd.DataFrame(
        [
            {
                "arch": arch,
                "seed": s,
                **confusion_stats(*COUNTS[arch, s]),
                "train_seconds": 600.0 + 10 * s,
                "train_images_per_second": 40.0 - 15 * (arch == "unetpp"),
            }
            for arch in archs
            for s in SEEDS
        ]
    )
    if shift == 0:  # identical architectures: copy unet's counts to every arch
        for arch in archs:
            results.loc[results.arch == arch, results.columns[2:]] = results[results.arch == archs[0]][
                results.columns[2:]
            ].to_numpy()
    names = [f"patch_{i + 1}_1_by_{i + 1}_LC08_L1TP_00205{i % 3}_20160520_20170324_01_T1" for i in range(N_IMAGES)]
    base = rng.uniform(0.55, 0.95, N_IMAGES)
    per_image = []
    for arch in archs:
        for s in SEEDS:
            noise = 0 if shift == 0 else rng.normal(0, 0.02, N_IMAGES)
            iou = np.clip(base + (shift / 2 if arch == "unet" else -shift / 2) + noise, 0, 1)
            for name, v in zip(names, iou, strict=True):
                tp = int(v * 200)
                per_image.append(
                    {
                        "arch": arch,
                        "seed": s,
                        "name": name,
                        "scene_id": name[-40:],
                        "tp": tp,
                        "fn": (200 - tp) // 2,
                        "fp": 200 - tp - (200 - tp) // 2,
                        "tn": 56,
                        "iou": v,
                        "f1": 2 * v / (1 + v),
                        "accuracy": (tp + 56) / 256,
                        "cloud_free": False,
                    }
                )
            for k in range(N_CLOUD_FREE):  # some false positives, differing by seed (and arch unless shift=0)
                fp = 5 * ((s + k + (0 if shift == 0 else archs.index(arch))) % 3)
                name = f"patch_{N_IMAGES + k + 1}_2_by_{k + 1}_LC08_L1TP_00205{k % 3}_20160520_20170324_01_T1"
                per_image.append(
                    {
                        "arch": arch,
                        "seed": s,
                        "name": name,
                        "scene_id": name[-40:],
                        "tp": 0,
                        "fn": 0,
                        "fp": fp,
                        "tn": 256 - fp,
                        "cloud_free": True,
                        "iou": np.nan,
                        "f1": np.nan,
                        "accuracy": 1 - fp / 256,
                        "fpr": fp / 256,
                    }
                )
    per_image = pd.DataFrame(per_image)
    per_image["fpr"] = per_image["fp"] / (per_image["fp"] + per_image["tn"])
    for (arch, s), group in per_image.groupby(["arch", "seed"]):
        at = (results.arch == arch) & (results.seed == s)
        results.loc[at, "per_image_iou"] = group["iou"].mean()
        for key, value in cloud_free_counts(group[["tp", "fn", "fp", "tn"]].to_numpy()).items():
            results.loc[at, key] = value
    costs = {
        "unet": {
            "params": 7.76e6,
            "flops_per_patch": 1.1e11,
            "sweep_device_hours": 3.5,
            "n_trials": 12,
            "n_trials_completed": 3,
            "n_trials_stopped": 8,
            "n_trials_failed": 1,
        },
        "unetpp": {
            "params": 9.04e6,
            "flops_per_patch": 2.6e11,
            "sweep_device_hours": 6.25,
            "n_trials": 12,
            "n_trials_completed": 2,
            "n_trials_stopped": 7,
            "n_trials_failed": 3,
        },
    }
    results.to_csv(root / "results.csv", index=False)
    tables.summary_table(results, costs=costs).to_csv(root / "summary.csv", index=False)
    tables.paired_table(results, per_image, n_boot=2000).to_csv(root / "paired.csv", index=False)
    best = {
        arch: {
            "trial_id": f"{arch}_0000{i}",
            "val_iou": 0.9 - 0.02 * i,
            "config": {"lr": 1e-4 * (i + 1), "depth": 4, "base_channels": 32, "loss": "ce"},
        }
        for i, arch in enumerate(archs)
    }
    meta = {
        "benchmark": "test-bench",
        "split_hash": "ab12" * 16,
        "data_hash": "cd34" * 16,
        "split_kind": "scene",
        "seeds": SEEDS,
        "architectures": archs,
        "best_configs": best,
        "device": "cpu (test)",
        "started_at": "2025-01-01T00:00:00Z",
        "finished_at": "2025-01-01T01:00:00Z",
    }
    (root / "meta.json").write_text(json.dumps(meta))
    if not optional:
        return root
    per_image.to_csv(root / "per_image.csv", index=False)
    epochs = np.arange(1, 11)
    curves = [
        {
            "arch": arch,
            "seed": s,
            "epoch": e,
            "train_loss": 0.6 * np.exp(-e / (3 + j)) + 0.1 + 0.01 * s,
            "val_loss": 0.6 * np.exp(-e / (3 + j)) + 0.15 + 0.02 * rng.random(),
            "val_iou": 0.9 - 0.4 * np.exp(-e / (2 + j)) - 0.01 * rng.random(),
        }
        for j, arch in enumerate(archs)
        for s in SEEDS
        for e in epochs
    ]
    pd.DataFrame(curves).to_csv(root / "curves.csv", index=False)
    trials = pd.DataFrame(
        {
            "arch": np.repeat(archs, 12),
            "val_iou": rng.uniform(0.6, 0.9, 12 * len(archs)),
            "device_hours": rng.uniform(0.1, 0.6, 12 * len(archs)),
            "stopped_by": np.tile(["completed"] * 3 + ["asha"] * 8 + ["diverged"], len(archs)),
        }
    )
    tables.budget_table(trials).to_csv(root / "budget.csv", index=False)
    scene_rows = [
        {
            "arch": arch,
            "seed": s,
            "scene_id": f"LC08_scene_{c}",
            "precision": 90 + rng.random(),
            "recall": 85 + rng.random(),
            "specificity": 98 + rng.random(),
            "iou": 78 + 3 * rng.random(),
            "overall_accuracy": 96 + rng.random(),
        }
        for arch in archs
        for s in SEEDS
        for c in range(3)
    ]
    pd.DataFrame(scene_rows).to_csv(root / "scene_scores.csv", index=False)
    scored = [f"LC08_scene_{c}" for c in range(3)]
    protocol = {"binarisation": "argmax", "patches": "every patch of each test scene", "scored_scenes": scored,
                "scenes_without_gt": ["LC08_scene_without_gt"], "stale_retrains": []}  # fmt: skip
    (root / "meta.json").write_text(json.dumps({**meta, "scene_protocol": protocol}))
    k = 4
    cloud = np.clip(_blobs(rng, k, SIZE), 0, 1)
    gt = (cloud > 0.5).astype(np.uint8)
    ground = np.array([0.35, 0.4, 0.25]) * rng.uniform(0.7, 1.0, (k, SIZE, SIZE, 1))  # greenish land
    rgb = ground * (1 - cloud[..., None]) + 0.95 * cloud[..., None]
    # Predictions: the cloud field plus each "model"'s own noise and threshold, so both error kinds show.
    preds = {
        f"pred_{a}": (cloud + (0.25 + 0.15 * j) * (_blobs(rng, k, SIZE) - 0.5) > 0.45 + 0.1 * j).astype(np.uint8)
        for j, a in enumerate(archs)
    }
    np.savez(root / "samples.npz", rgb=rgb.astype(np.float32), gt=gt, names=np.array(names[:k]), seed=0, **preds)
    return root


def test_a_full_directory_loads_every_file(tmp_path):
    root = make_results_dir(tmp_path / "full")
    res = load_results(root)
    assert isinstance(res, Results) and res.root == root
    assert res.meta["benchmark"] == "test-bench" and res.meta["seeds"] == SEEDS
    assert len(res.results) == len(ARCHS) * len(SEEDS)
    assert list(res.summary.arch) == ARCHS and len(res.paired) == 1
    for frame in (res.per_image, res.curves, res.budget, res.scene_scores):
        assert isinstance(frame, pd.DataFrame) and len(frame)
    assert set(res.samples) >= {"rgb", "gt", "names", "seed", "pred_unet", "pred_unetpp"}
    assert res.samples["rgb"].shape == (4, SIZE, SIZE, 3)
    assert res.archs == ARCHS


def test_optional_files_are_none_when_absent(tmp_path):
    res = load_results(make_results_dir(tmp_path / "bare", optional=False))
    assert (res.per_image, res.curves, res.budget, res.scene_scores, res.samples) == (None,) * 5
    assert len(res.results) and len(res.summary)


def test_an_empty_optional_csv_counts_as_absent(tmp_path):
    root = make_results_dir(tmp_path / "empty", optional=False)
    pd.DataFrame().to_csv(root / "curves.csv", index=False)  # what pandas writes for a frame with no rows
    assert load_results(root).curves is None


def test_archs_follow_meta_then_the_summary(tmp_path):
    root = make_results_dir(tmp_path / "order", optional=False)
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "architectures": ["unetpp"]}))
    assert load_results(root).archs == ["unetpp", "unet"]


def test_missing_required_file_is_a_clear_error(tmp_path):
    root = make_results_dir(tmp_path / "broken", optional=False)
    (root / "paired.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"paired\.csv"):
        load_results(root)


@pytest.mark.parametrize("name", REQUIRED_FILES)
def test_each_required_file_is_named_when_missing(tmp_path, name):
    root = make_results_dir(tmp_path / "broken", optional=False)
    (root / name).unlink()
    with pytest.raises(MissingResultsError, match=rf"{root}.*missing {name}"):
        load_results(root)


def test_every_missing_required_file_is_named(tmp_path):
    with pytest.raises(MissingResultsError) as err:
        load_results(tmp_path)  # an existing but empty directory
    assert all(name in str(err.value) for name in REQUIRED_FILES)


@pytest.mark.parametrize("make", [lambda tmp: tmp / "nowhere", lambda tmp: tmp / "a_file"])
def test_a_path_that_is_not_a_directory_is_named(tmp_path, make):
    (tmp_path / "a_file").write_text("not a directory")
    path = make(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(path)):
        load_results(path)


def test_a_missing_column_names_the_file_and_column(tmp_path):
    root = make_results_dir(tmp_path / "columns", optional=False)
    pd.read_csv(root / "paired.csv").drop(columns="p_a_better").to_csv(root / "paired.csv", index=False)
    with pytest.raises(ResultsError, match=r"paired\.csv: missing column\(s\) p_a_better"):
        load_results(root)


@pytest.mark.parametrize(
    ("name", "content"),
    [("meta.json", "{not json"), ("meta.json", "[1, 2]"), ("summary.csv", ""), ("samples.npz", "not a zip")],
)
def test_an_unreadable_file_is_named(tmp_path, name, content):
    root = make_results_dir(tmp_path / "garbled", optional=False)
    (root / name).write_text(content)
    with pytest.raises(ResultsError, match=rf"{name}"):
        load_results(root)


def test_the_schema_constants_cover_every_csv():
    csvs = {name for name in (*REQUIRED_FILES, *OPTIONAL_FILES) if name.endswith(".csv")}
    assert set(COLUMNS) == csvs
    assert "iou" in COLUMNS["results.csv"] and "iou" in COLUMNS["scene_scores.csv"]


def test_errors_are_value_errors_and_a_missing_file_is_a_file_not_found_error():
    assert issubclass(ResultsError, ValueError)
    assert issubclass(MissingResultsError, ResultsError) and issubclass(MissingResultsError, FileNotFoundError)


@pytest.mark.parametrize("cut", ["mid_line", "whole_lines"])
def test_a_cut_table_is_refused_naming_it_not_rendered_without_its_rows(tmp_path, cut, capsys):
    from harness.cli import main

    root = make_results_dir(tmp_path / "cut")
    lines = (root / "results.csv").read_text().splitlines(keepends=True)
    if cut == "mid_line":  # what a full disk or a killed copy leaves
        text = "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]
        expected = "results.csv: cut short (its last line is incomplete)"
    else:  # a file cut at a line boundary, or rows deleted by hand: one architecture's seed vanishes
        text = "".join(lines[:-1])
        expected = f"results.csv: {len(lines) - 2} rows, expected one per architecture and seed"
    (root / "results.csv").write_text(text)
    with pytest.raises(ResultsError, match=re.escape(expected)):
        load_results(root)
    assert main(["report", str(root)]) == 3  # was: exit 0 and a report without those rows
    assert expected in capsys.readouterr().err


def test_per_image_rows_must_cover_every_architecture_and_seed_alike(tmp_path):
    root = make_results_dir(tmp_path / "images")
    per_image = pd.read_csv(root / "per_image.csv")
    per_image.iloc[:-3].to_csv(root / "per_image.csv", index=False)
    with pytest.raises(ResultsError, match=r"per_image.csv: every architecture and seed must score the same test"):
        load_results(root)
