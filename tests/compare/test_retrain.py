"""One final retrain: repeatable on CPU, scored like validation, samples kept in order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from harness.compare import tables
from harness.compare.retrain import retrain_and_score, score_scenes
from harness.compare.tables import source_root
from harness.data.cache import open_cache
from harness.data.layout import find_scene_gts
from harness.data.prepare import prepare_data
from harness.metrics import SCENE_SCORE_KEYS
from harness.results import SCORING_VERSION


def test_identical_configurations_show_no_difference(smoke_sweep):
    bench, _, _ = smoke_sweep
    data = prepare_data(**bench.prepare_args())
    config = dataclasses.replace(bench.trial_config("unet"), depth=1, epochs=2, seed=3)
    a = retrain_and_score(config, data, bench.prepare_args(), [], {})
    b = retrain_and_score(config, data, bench.prepare_args(), [], {})
    assert np.array_equal(a.per_image_counts, b.per_image_counts), "same config and seed, same CPU result"
    per_image = []
    results = []
    for label, r in (("a", a), ("b", b)):
        counts = r.per_image_counts
        iou = counts[:, 0] / np.maximum(counts[:, 0] + counts[:, 1] + counts[:, 2], 1)
        per_image.append(pd.DataFrame({"arch": label, "seed": 3, "name": np.arange(len(counts)), "iou": iou}))
        results.append({"arch": label, "seed": 3, "iou": float(iou.mean())})
    paired = tables.paired_table(pd.DataFrame(results), pd.concat(per_image), n_boot=500)
    row = paired.iloc[0]
    assert row.iou_diff_mean == 0 and row.boot_ci_low == 0 and row.boot_ci_high == 0
    # One seed: no seed-to-seed variation is observed, so the headline has no interval.
    assert np.isnan(row.iou_diff_ci_low) and np.isnan(row.iou_diff_ci_high)
    assert row.image_wilcoxon_p == 1.0 and row.p_a_better == 0.5


def test_retrain_keeps_the_requested_samples_and_scores_every_test_patch(smoke_sweep):
    bench, _, _ = smoke_sweep
    data = prepare_data(**bench.prepare_args())
    test_rows = data.indices("test")
    wanted = [int(test_rows[0]), int(test_rows[-1])]
    config = dataclasses.replace(bench.trial_config("unetpp"), depth=1, epochs=1, seed=0)
    result = retrain_and_score(config, data, bench.prepare_args(), wanted, {})
    assert result.status == "completed" and result.arch == "unetpp" and result.seed == 0
    assert result.per_image_counts.shape == (len(test_rows), 4)
    assert result.sample_rows.tolist() == sorted(wanted)
    assert result.sample_preds.shape[0] == 2 and set(np.unique(result.sample_preds)) <= {0, 1}
    assert [m["epoch"] for m in result.history] == [1]


@pytest.fixture(scope="module")
def nonempty_scene_split(synthetic_root, tmp_path_factory):
    """The tiny synthetic data, split by scene with partly empty border patches dropped (as cloud95.yaml)."""
    data = prepare_data(
        root=synthetic_root,
        cache_dir=tmp_path_factory.mktemp("scenes") / "cache",
        split_kind="scene",
        fractions=(0.5, 0.25, 0.25),
        nonempty_only=True,
    )
    return data, {k: str(v) for k, v in find_scene_gts(synthetic_root).items()}


def test_a_perfect_model_scores_100_on_every_test_scene_although_the_split_dropped_border_patches(
    nonempty_scene_split,
):
    data, scene_gts = nonempty_scene_split
    cache = open_cache(data.cache_dir)
    test_rows = data.indices("test")
    calls = []

    def ground_truth(rows):  # a perfect model: its prediction of a patch is the patch's ground truth
        calls.append(len(rows))
        return np.asarray(cache.masks[rows])

    scores = score_scenes(data.cache_dir, test_rows, scene_gts, ground_truth)
    assert scores and all(s[k] == 100.0 for s in scores for k in SCENE_SCORE_KEYS)
    # The test split lacks some of each scene's patches (the partly empty borders), yet they were predicted:
    assert any(s["test_patches"] < s["patches"] for s in scores)
    assert sum(calls) == sum(s["patches"] for s in scores) and len(calls) == len(scores)  # one scene at a time
    # The old scoring, stitching only the test split's patches (the rest left clear), falls short of 100.
    in_test = set(test_rows.tolist())

    def test_split_only(rows):
        return np.stack([cache.masks[r] if r in in_test else np.zeros_like(cache.masks[r]) for r in rows])

    old = score_scenes(data.cache_dir, test_rows, scene_gts, test_split_only)
    assert min(s["recall"] for s in old) < 100.0


def test_a_test_scene_without_ground_truth_is_not_scored(nonempty_scene_split):
    data, scene_gts = nonempty_scene_split
    test_rows = data.indices("test")
    scene = open_cache(data.cache_dir).patches.scene_id.iloc[test_rows[0]]
    without = {k: v for k, v in scene_gts.items() if k != scene}
    assert score_scenes(data.cache_dir, test_rows, without, lambda rows: None) == []


def test_retrain_scores_scenes_from_every_patch(smoke_sweep):
    bench, _, _ = smoke_sweep
    data = prepare_data(**bench.prepare_args())
    gts = {k: str(v) for k, v in find_scene_gts(source_root(bench)).items()}
    config = dataclasses.replace(bench.trial_config("unet"), depth=1, epochs=1, seed=1)
    result = retrain_and_score(config, data, bench.prepare_args(), [], gts)
    assert result.scoring_version == SCORING_VERSION
    table = open_cache(data.cache_dir).patches
    test_scenes = set(table.scene_id.iloc[data.indices("test")])
    assert {s["scene_id"] for s in result.scene_scores} == test_scenes
    for s in result.scene_scores:
        assert s["patches"] == int((table.scene_id == s["scene_id"]).sum())
        assert 0 <= s["iou"] <= 100


def test_a_retrain_is_also_scored_by_the_official_protocol_when_asked(smoke_sweep, tmp_path):
    from harness.data.__main__ import main as data_main
    from harness.predict.evaluate import SCORES

    bench, _, _ = smoke_sweep
    data = prepare_data(**bench.prepare_args())
    tree = tmp_path / "official"
    data_main(["synth", "--layout", "38-cloud-test", "--out", str(tree), "--patch-size", "32", "--scenes", "2"])
    config = dataclasses.replace(bench.trial_config("unet"), depth=1, epochs=1, seed=3)
    result = retrain_and_score(config, data, bench.prepare_args(), [], {}, official_test=str(tree))
    assert len(result.official_scores) == 2
    for row in result.official_scores:
        assert set(SCORES) <= set(row) and all(0 <= row[k] <= 100 for k in SCORES if not np.isnan(row[k]))
    assert retrain_and_score(config, data, bench.prepare_args(), [], {}).official_scores is None
