"""The report's K-way section (harness.report.ranking): ranks, the best and Pareto sets, figures at K = 10."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from harness.compare import tables
from harness.metrics import confusion_stats, per_image_scores
from harness.models import list_models
from harness.report import write_report
from harness.report.ranking import kway_table, pareto_set, scene_means, score_matrices
from harness.results import Results, load_results, write_results
from harness.stats.ranking import compare_with_best, ranking

SEEDS = [1, 2, 3]


def k_way_results_dir(root, archs, *, seed=0, n_images=40, n_scenes=5):
    """A results directory of ``archs`` whose per-image counts are simulated; every table is the harness's own."""
    rng = np.random.default_rng(seed)
    quality = np.linspace(0.85, 0.55, len(archs))  # the first architecture best, the last worst
    pixels = 400
    image_rows, seed_rows = [], []
    for arch, q in zip(archs, quality, strict=True):
        for s in SEEDS:
            iou = np.clip(q + rng.normal(0, 0.05, n_images) + rng.normal(0, 0.01), 0.05, 0.99)
            cloud = rng.integers(100, 300, n_images)
            tp = np.round(iou * cloud).astype(int)
            fn = cloud - tp
            fp = np.round(tp / iou - tp - fn).clip(0).astype(int)
            tn = pixels - tp - fn - fp
            counts = np.stack([tp, fn, fp, tn], axis=1)
            scores = per_image_scores(counts)
            image_rows.append(
                pd.DataFrame(
                    {
                        "arch": arch,
                        "seed": s,
                        "name": [f"img{i:03d}" for i in range(n_images)],
                        "scene_id": [f"scene{i % n_scenes}" for i in range(n_images)],
                        "tp": tp,
                        "fn": fn,
                        "fp": fp,
                        "tn": tn,
                        **{k: scores[k].to_numpy() for k in ("cloud_free", "iou", "f1", "accuracy", "fpr")},
                    }
                )
            )
            seed_rows.append(
                {
                    "arch": arch,
                    "seed": s,
                    **confusion_stats(*(int(x) for x in counts.sum(axis=0))),
                    "per_image_iou": float(scores["iou"].mean()),
                    "train_seconds": 100.0,
                    "train_images_per_second": 50.0,
                    "test_images_per_second": 400.0,
                }
            )
    results, per_image = pd.DataFrame(seed_rows), pd.concat(image_rows, ignore_index=True)
    costs = {
        arch: {"params": 1e6 * (i + 1), "flops_per_patch": 1e10 * 1.5**i, "sweep_device_hours": 2.0 + i % 4}
        for i, arch in enumerate(archs)
    }
    res = Results(
        root=root,
        meta={"architectures": archs, "benchmark": f"k{len(archs)}", "seeds": SEEDS},
        results=results,
        summary=tables.summary_table(results, costs=costs),
        paired=tables.paired_table(results, per_image, n_boot=200),
        per_image=per_image,
        curves=None,
        budget=None,
        scene_scores=None,
        samples=None,
    )
    write_results(root, res)
    return root


@pytest.fixture(scope="module")
def ten(tmp_path_factory):
    archs = list_models()[:10]
    root = k_way_results_dir(tmp_path_factory.mktemp("k10"), archs)
    return archs, root, write_report(root)


def test_ten_architectures_are_ranked_with_intervals_and_readable_figures(ten):
    _, root, report = ten
    text = report.read_text()
    section = text.split("## Ranking of the 10 architectures", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 10 and rows[0].startswith("| 1 |") and rows[-1].startswith("| 10 |")
    for name in ("pareto", "profile"):
        img = mpimg.imread(root / "figures" / f"{name}.png")
        # Wide enough for ten labels, not a poster: between 700 and 1600 px across.
        assert 700 < img.shape[1] < 1600 and float(np.std(img)) > 0.01


def test_the_section_is_the_statistics_of_the_per_image_table(ten):
    _, root, _ = ten
    res = load_results(root)
    scores, strata = score_matrices(res)
    table = kway_table(res)
    expected = ranking(scores)
    assert list(table.arch) == [r["arch"] for r in expected]
    assert list(table.rank_low) == [r["rank_low"] for r in expected]
    against = {r["arch"]: r for r in compare_with_best(scores)}
    for _, row in table.iloc[1:].iterrows():
        assert row.vs_best_p_holm == pytest.approx(against[row.arch]["p_holm"])
    # The simulated best is far ahead of the worst: the last rank is pinned, the worst not in the best set.
    assert not table.in_best_set.iloc[-1] and table.rank_high.iloc[-1] == 10
    assert set(scene_means(scores, strata)[table.arch.iloc[0]].round(6)) and len(set(strata)) == 5


def test_pareto_set_by_hand():
    points = {"a": (1.0, 0.80), "b": (2.0, 0.85), "c": (3.0, 0.84), "d": (1.0, 0.79), "e": (np.nan, 0.99)}
    # c costs more than b and scores less; d costs the same as a and scores less; e has no cost.
    assert pareto_set(points) == ["a", "b"]


def test_two_architectures_get_no_k_way_section(tmp_path):
    root = k_way_results_dir(tmp_path / "two", list_models()[:2])
    text = write_report(root).read_text()
    assert "## Ranking of" not in text and not (root / "figures" / "pareto.png").exists()
    assert kway_table(load_results(root)).empty
