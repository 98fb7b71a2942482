"""Tests of harness.report on a small, hand-made but self-consistent results directory."""

import json
import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from harness import stats
from harness.metrics import confusion_stats
from harness.report import load_results, write_report

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


def _blobs(rng, k, size):
    """k binary masks with a few soft-edged 'clouds' each."""
    yy, xx = np.mgrid[:size, :size]
    field = np.zeros((k, size, size))
    for i in range(k):
        for _ in range(3):
            cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 8, size / 3)
            field[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    return field


def make_results_dir(root, *, shift=0.05, optional=True, archs=ARCHS, seed=0):
    """Write a results directory in harness.report's format; ``shift`` = how much better unet is per image."""
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
                    }
                )
    per_image = pd.DataFrame(per_image)
    costs = {
        "unet": {"params": 7.76e6, "flops_per_patch": 1.1e11, "sweep_device_hours": 3.5, "n_trials": 12},
        "unetpp": {"params": 9.04e6, "flops_per_patch": 2.6e11, "sweep_device_hours": 6.25, "n_trials": 12},
    }
    results.to_csv(root / "results.csv", index=False)
    stats.summary_table(results, costs=costs, n_boot=2000).to_csv(root / "summary.csv", index=False)
    stats.paired_table(results, per_image, n_boot=2000).to_csv(root / "paired.csv", index=False)
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
        }
    )
    stats.budget_table(trials).to_csv(root / "budget.csv", index=False)
    scene_rows = [
        {
            "arch": arch,
            "seed": s,
            "scene_id": f"LC08_scene_{c}",
            "precision": 90 + rng.random(),
            "recall": 85 + rng.random(),
            "specificity": 98 + rng.random(),
            "jaccard": 78 + 3 * rng.random(),
            "overall_accuracy": 96 + rng.random(),
        }
        for arch in archs
        for s in SEEDS
        for c in range(3)
    ]
    pd.DataFrame(scene_rows).to_csv(root / "scene_scores.csv", index=False)
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


def _table_rows(report: str, heading: str) -> dict[str, list[str]]:
    """First Markdown table after ``heading``: row label -> cells."""
    section = report.split(heading, 1)[1]
    rows = {}
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        elif rows:
            break
    return rows


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    root = make_results_dir(tmp_path_factory.mktemp("results"))
    return root, write_report(root)


def test_report_names_both_architectures_and_the_winner(full_report):
    root, path = full_report
    assert path == root / "report.md"
    text = path.read_text()
    assert "U-Net" in text and "UNet++" in text
    assert "**U-Net** has the higher mean per-image test IoU" in text
    assert "the CI excludes 0" in text
    assert "ab12" * 16 in text  # split hash
    assert "`lr`" in text and "unet_00000" in text  # chosen configs


def test_every_linked_figure_exists_and_is_not_blank(full_report):
    root, path = full_report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", path.read_text())
    assert sorted(links) == sorted(f"figures/{n}.png" for n in ("curves", "samples", "per_image_iou", "budget"))
    for link in links:
        png = root / link
        assert png.stat().st_size > 15_000, link
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05, f"{link} is (nearly) one colour"


def test_table1_counts_equal_the_csv(full_report):
    root, path = full_report
    rows = _table_rows(path.read_text(), "## Pixel statistics")
    summary = pd.read_csv(root / "summary.csv").set_index("arch")
    assert rows["statistic"] == ["U-Net", "UNet++"]
    for arch in ARCHS:  # the hand counts, pooled over seeds
        pooled = confusion_stats(*np.sum([COUNTS[arch, s] for s in SEEDS], axis=0).tolist())
        assert [summary.loc[arch, k] for k in ("tp", "fn", "fp", "tn", "total")] == [
            pooled[k] for k in ("tp", "fn", "fp", "tn", "total")
        ]
    for key, name in (("tp", "TP"), ("fn", "FN"), ("fp", "FP"), ("tn", "TN"), ("total", "total pixels")):
        printed = [int(cell.replace(",", "")) for cell in rows[name]]
        assert printed == [summary.loc[a, key] for a in ARCHS]
    iou = float(rows["threat score (IoU)"][0])
    assert iou == pytest.approx(summary.loc["unet", "threat_score"], abs=5e-5)


def test_identical_architectures_report_no_significant_difference(tmp_path):
    root = make_results_dir(tmp_path / "same", shift=0, optional=False)
    text = write_report(root).read_text()
    assert "no significant difference" in text
    assert "CI excludes 0" not in text
    paired = pd.read_csv(root / "paired.csv").iloc[0]
    assert paired.iou_diff_mean == 0 and paired.wilcoxon_p == 1.0
    assert not (root / "figures" / "curves.png").exists()  # optional inputs absent: figures left out
    assert "![" not in text


def test_missing_required_file_is_a_clear_error(tmp_path):
    root = make_results_dir(tmp_path / "broken", optional=False)
    (root / "paired.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"paired\.csv"):
        load_results(root)
