"""``cloudmask evaluate``: the official 38-Cloud scene protocol on a synthetic 38-Cloud_test tree."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile

from harness.cli import main
from harness.data.__main__ import main as data_main
from harness.data.layout import find_scene_gts
from harness.data.synth_scene import make_scene
from harness.predict.evaluate import SCORES, evaluate_tree, official_mask

SEED, PX, SCENES = 2, 32, 2


@pytest.fixture(scope="module")
def test_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval") / "data"
    assert data_main(["synth", "--layout", "38-cloud-test", "--out", str(root), "--patch-size", str(PX),
                      "--seed", str(SEED), "--scenes", str(SCENES)]) == 0  # fmt: skip
    return root


def ground_truth_probability(patches):
    """The generator's own patch ground truth (its canvas, independent of the stitching code) as probability 1/0."""
    scenes = {s.scene_id: s for s in (make_scene(SEED, i, patch_size=PX, grid=(4, 6)) for i in range(SCENES))}
    out = []
    for p in patches:
        gt = scenes[p.patch.scene_id].gt
        r, c = p.patch.row - 1, p.patch.col - 1
        out.append(gt[r * PX : (r + 1) * PX, c * PX : (c + 1) * PX].astype(np.float32))
    return np.stack(out)


def test_the_ground_truth_scores_100_on_every_score_and_scene(test_tree):
    scores = evaluate_tree(test_tree, ground_truth_probability, progress=False)
    assert scores["protocol"]["name"] == "38-Cloud official protocol" and scores["protocol"]["unit"] == "scene"
    assert len(scores["per_scene"]) == SCENES == scores["mean"]["scenes"]
    for row in scores["per_scene"]:
        assert {k: row[k] for k in SCORES} == dict.fromkeys(SCORES, 100.0), row
    assert {k: scores["mean"][k] for k in SCORES} == dict.fromkeys(SCORES, 100.0)


def test_scores_are_the_scenes_confusion_counts_by_hand(test_tree):
    """Predict "cloud" everywhere: precision is the cloud share, recall 100, specificity 0, Jaccard = precision."""
    scores = evaluate_tree(test_tree, lambda ps: np.ones((len(ps), PX, PX), np.float32), progress=False)
    gts = find_scene_gts(test_tree)

    for row in scores["per_scene"]:
        gt = tifffile.imread(gts[row["scene_id"]]) != 0
        share = 100 * gt.mean()
        assert row["precision"] == pytest.approx(share) and row["jaccard"] == pytest.approx(share)
        assert row["recall"] == 100 and row["specificity"] == 0 and row["overall_accuracy"] == pytest.approx(share)


def test_the_official_threshold_is_12_of_the_saved_8_bit_probability():
    # 12/255 = 0.04706: 0.0490 saves as 12 (not cloud), 0.0500 as 13 (cloud).
    assert official_mask(np.array([0.0490, 0.0500, 1.0, 0.0])).tolist() == [0, 1, 1, 0]


def test_the_command_writes_the_json_with_the_protocol_stamp(test_tree, checkpoint, tmp_path, capsys):
    out = tmp_path / "scores.json"
    args = ["evaluate", "--model", str(checkpoint), "--data", str(test_tree), "--json", str(out), "-q"]
    assert main(args) == 0
    scores = json.loads(out.read_text())
    assert set(scores) == {"protocol", "per_scene", "mean"} and len(scores["per_scene"]) == SCENES
    assert all(0 <= scores["mean"][k] <= 100 for k in SCORES)
    printed = capsys.readouterr().out
    assert printed.startswith("38-Cloud official protocol") and f"mean of {SCENES} scenes" in printed
    bad = tmp_path / "no-gts"
    shutil.copytree(test_tree, bad)
    shutil.rmtree(bad / "38-Cloud_test" / "Entire_scene_gts")
    assert main([*args[:4], str(bad)]) == 3
    assert "without a scene ground truth" in capsys.readouterr().err


def test_a_changed_threshold_is_applied_and_stamped(test_tree):
    """A probability of 0.3 everywhere: cloud by the official 12/255, clear at 0.5; the stamp says which."""
    flat = lambda ps: np.full((len(ps), PX, PX), 0.3, np.float32)  # noqa: E731
    official = evaluate_tree(test_tree, flat, progress=False)
    changed = evaluate_tree(test_tree, flat, threshold=0.5, progress=False)
    assert official["mean"]["recall"] == 100 and official["protocol"]["threshold"] == 12 / 255
    assert changed["mean"]["specificity"] == 100 and changed["mean"]["recall"] == 0
    assert changed["protocol"]["name"] == "38-Cloud official protocol, threshold changed"
    assert "official: 12/255" in changed["protocol"]["probability"]
