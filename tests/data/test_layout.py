"""Layout reading: patch names, 38-Cloud / 95-Cloud / merged / test trees, patch CSVs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.data.layout import (
    BANDS,
    PatchId,
    discover_patches,
    parse_patch_filename,
    parse_patch_name,
    read_csv_names,
    scan_tree,
)
from harness.data.synth import ADDITIONAL_DIR, TEST_DIR, TRAIN_DIR, write_synthetic_dataset

REAL_NAME = "patch_192_10_by_12_LC08_L1TP_002053_20160520_20170324_01_T1"


@pytest.fixture(scope="module")
def merged_root(tmp_path_factory) -> Path:
    """38-Cloud training (2 scenes) + 95-Cloud additional (1 scene) + test (1 scene) under one root."""
    root = tmp_path_factory.mktemp("merged") / "data"
    return write_synthetic_dataset(root, scenes=2, patch_size=16, seed=5, test_scenes=1, additional_scenes=1)


def test_parse_patch_filename_of_the_real_sample():
    band, pid = parse_patch_filename(f"red_{REAL_NAME}.TIF")
    assert band == "red"
    assert pid == PatchId(192, 10, 12, "LC08_L1TP_002053_20160520_20170324_01_T1")
    assert pid.name == REAL_NAME
    assert pid.filename("gt") == f"gt_{REAL_NAME}.TIF"
    assert parse_patch_filename(Path("x") / f"nir_{REAL_NAME}.tif")[0] == "nir"
    assert parse_patch_name(REAL_NAME) == pid


@pytest.mark.parametrize(
    "bad",
    [
        f"swir_{REAL_NAME}.TIF",
        f"red_{REAL_NAME}.png",
        "red_patch_1_1_by_1_S2A_MSIL1C.TIF",
        "red_patch_x_1_by_1_LC08_L1TP_002053_20160520_20170324_01_T1.TIF",
        "truecolor_" + REAL_NAME + ".TIF",
    ],
)
def test_parse_patch_filename_rejects_other_names(bad):
    with pytest.raises(ValueError, match="not a patch"):
        parse_patch_filename(bad)


def test_discover_the_real_sample(real_sample_root):
    (pf,) = discover_patches(real_sample_root)
    assert pf.name == REAL_NAME and pf.kind == "train"
    assert set(pf.bands) == set(BANDS)
    for band in BANDS:
        assert pf.bands[band].parent.name == f"train_{band}"
    assert pf.gt is not None and pf.gt.parent.name == "train_gt"
    assert scan_tree(real_sample_root).problems == []


def test_merged_38_and_95_cloud_trees_are_discovered_together(merged_root):
    scan = scan_tree(merged_root)
    assert scan.problems == []
    train = [p for p in scan.patches if p.kind == "train"]
    folders = {p.bands["red"].parent.parent.name for p in train}
    assert folders == {TRAIN_DIR, ADDITIONAL_DIR}
    additional = [p for p in train if p.bands["red"].parent.parent.name == ADDITIONAL_DIR]
    assert additional and all(p.gt.parent.name == "train_gt_additional_to38cloud" for p in additional)
    assert len({p.patch.scene_id for p in train}) == 3
    assert [p.name for p in scan.patches] == sorted(p.name for p in scan.patches)
    # Case-insensitive CSV names: 38-Cloud.csv and 38-cloud_nonempty.csv are both found.
    assert {c.name for c in scan.csv_files} >= {
        "training_patches_38-Cloud.csv",
        "training_patches_38-cloud_nonempty.csv",
        "training_patches_95-cloud_nonempty.csv",
    }


def test_test_trees_have_no_ground_truth_and_subset_filters(merged_root):
    test = discover_patches(merged_root, subset="test")
    assert test and all(p.gt is None and p.kind == "test" for p in test)
    assert all(p.bands["red"].parent.name == "test_red" for p in test)
    train = discover_patches(merged_root, subset="train")
    assert len(train) + len(test) == len(discover_patches(merged_root))
    assert discover_patches(merged_root / TEST_DIR) == test
    with pytest.raises(ValueError, match="subset"):
        discover_patches(merged_root, subset="validation")


def test_a_root_that_directly_holds_band_folders(merged_root):
    direct = discover_patches(merged_root / TRAIN_DIR)
    assert direct and all(p.bands["red"].parent.parent == merged_root / TRAIN_DIR for p in direct)


def test_the_95_cloud_folder_alone_is_complete(merged_root):
    # Its non-empty list also names 38-Cloud scenes' patches: absent scenes are not problems.
    additional = merged_root / ADDITIONAL_DIR
    listed = read_csv_names(additional / "training_patches_95-cloud_nonempty.csv")
    own = {p.name for p in discover_patches(additional)}
    assert set(listed) - own  # it does list patches that are not in this folder
    assert scan_tree(additional).problems == []


def test_csv_names_without_files_are_reported_with_the_csv_path(merged_root, tmp_path):
    tree = Path(shutil.copytree(merged_root / TRAIN_DIR, tmp_path / "t"))
    # The same file under the other spelling people use; names still matched case-insensitively.
    csv_path = tree / "training_patches_38-cloud.csv"
    (tree / "training_patches_38-Cloud.csv").rename(csv_path)
    scene = discover_patches(tree)[0].patch.scene_id
    with open(csv_path, "a") as f:
        f.write(f"patch_999_9_by_9_{scene}\n")
    problems = scan_tree(tree).problems
    assert [(p.path, "patch_999_9_by_9" in p.message) for p in problems] == [(csv_path, True)]


def test_missing_files_and_stray_names_are_reported(merged_root, tmp_path):
    tree = Path(shutil.copytree(merged_root / ADDITIONAL_DIR, tmp_path / "t"))
    first = discover_patches(tree)[0]
    first.bands["green"].unlink()
    first.gt.unlink()
    stray = tree / "train_red_additional_to38cloud" / "red_oops.TIF"
    stray.write_bytes(b"")
    (tree / "train_red_additional_to38cloud" / "Thumbs.db").write_bytes(b"")  # not a TIFF: ignored
    problems = {p.path: p.message for p in scan_tree(tree).problems}
    assert problems.keys() == {first.bands["green"], first.gt, stray}
    assert "missing" in problems[first.bands["green"]]
    assert "ground truth" in problems[first.gt]


def test_an_empty_or_absent_root(tmp_path):
    assert "no patches found" in scan_tree(tmp_path).problems[0].message
    with pytest.raises(FileNotFoundError):
        scan_tree(tmp_path / "absent")
