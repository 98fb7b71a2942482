"""Synthetic scenes: real names and formats, determinism, statistics like the real sample."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from harness.data.layout import BANDS, discover_patches, is_nonempty, read_csv_names, scan_tree
from harness.data.synth import SCENE_GT_DIR, TEST_DIR, TRAIN_DIR, write_synthetic_dataset

SCENE_ID = re.compile(r"^LC08_L1TP_\d{6}_\d{8}_\d{8}_01_T1$")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _stack(pf) -> np.ndarray:
    return np.stack([tifffile.imread(pf.bands[b]) for b in BANDS])


@pytest.fixture(scope="module")
def stats_root(tmp_path_factory) -> Path:
    """6 scenes of 64 px patches, the default size: what the statistics tests look at."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("stats") / "d", scenes=6, patch_size=64, seed=0)


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    kwargs = {"scenes": 2, "patch_size": 16, "test_scenes": 1}
    a = _files(write_synthetic_dataset(tmp_path / "a", seed=3, **kwargs))
    b = _files(write_synthetic_dataset(tmp_path / "b", seed=3, **kwargs))
    c = _files(write_synthetic_dataset(tmp_path / "c", seed=4, **kwargs))
    assert a == b
    assert a.keys() != c.keys()  # scene ids come from the seed, so every name changes


def test_layout_names_and_csvs_follow_38_cloud(synthetic_root):
    train_tree, test_tree = synthetic_root / TRAIN_DIR, synthetic_root / TEST_DIR
    assert scan_tree(synthetic_root).problems == []
    train = discover_patches(synthetic_root, subset="train")
    test = discover_patches(synthetic_root, subset="test")
    scenes = sorted({p.patch.scene_id for p in train})
    assert len(scenes) == 4 and len({p.patch.scene_id for p in test}) == 1
    assert all(SCENE_ID.match(s) for s in scenes)
    assert not (test_tree / "test_gt").exists() and all(p.gt is None for p in test)
    for scene in scenes:
        grid = [p.patch for p in train if p.patch.scene_id == scene]
        ncols = max(p.col for p in grid)
        assert len(grid) == ncols * max(p.row for p in grid)
        assert all(p.k == (p.row - 1) * ncols + p.col for p in grid)
    assert sorted(read_csv_names(train_tree / "training_patches_38-Cloud.csv")) == [p.name for p in train]
    assert sorted(read_csv_names(train_tree / "training_sceneids_38-Cloud.csv")) == scenes
    nonempty = sorted(read_csv_names(train_tree / "training_patches_38-cloud_nonempty.csv"))
    assert nonempty == [p.name for p in train if is_nonempty(_stack(p))]
    assert sorted(read_csv_names(test_tree / "test_patches_38-Cloud.csv")) == [p.name for p in test]


def test_files_have_the_real_formats(synthetic_root):
    pf = discover_patches(synthetic_root, subset="train")[0]
    for band in BANDS:
        with tifffile.TiffFile(pf.bands[band]) as tif:
            page = tif.pages[0]
            assert page.dtype == np.uint16 and page.shape == (32, 32)
            assert page.compression == 32773  # PackBits
            assert not tif.is_geotiff and 33550 not in page.tags  # no geo tags
    gts = [tifffile.imread(p.gt) for p in discover_patches(synthetic_root, subset="train")]
    assert all(g.dtype == np.uint8 for g in gts)
    assert set(np.unique(np.stack(gts))) == {0, 255}


@pytest.mark.parametrize("tree", [TRAIN_DIR, TEST_DIR])
def test_scene_ground_truth_is_the_central_crop_of_the_patch_canvas(synthetic_root, tree):
    patches = discover_patches(synthetic_root / tree)
    for scene in sorted({p.patch.scene_id for p in patches}):
        gt = tifffile.imread(synthetic_root / tree / SCENE_GT_DIR / f"edited_corrected_gts_{scene}.TIF")
        assert gt.dtype == np.uint8 and set(np.unique(gt)) <= {0, 1}
        grid = [p for p in patches if p.patch.scene_id == scene]
        rows, cols = max(p.patch.row for p in grid), max(p.patch.col for p in grid)
        canvas_shape = np.array([rows * 32, cols * 32])
        assert all(gt.shape % np.array(32) != 0)  # the scene is not a multiple of the patch size
        if tree == TEST_DIR:
            continue  # no patch ground truth to compare with
        canvas = np.zeros(canvas_shape, np.uint8)
        for p in grid:
            r, c = p.patch.row - 1, p.patch.col - 1
            canvas[r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32] = tifffile.imread(p.gt) // 255
        oy, ox = (canvas_shape - gt.shape) // 2
        np.testing.assert_array_equal(canvas[oy : oy + gt.shape[0], ox : ox + gt.shape[1]], gt)
        assert canvas.sum() == gt.sum()  # nothing outside the crop


def _pixels(root: Path):
    clear, cloud, covers, empty = [], [], [], 0
    patches = discover_patches(root, subset="train")
    for pf in patches:
        bands = _stack(pf).reshape(4, -1).astype(np.float64)
        gt = tifffile.imread(pf.gt).reshape(-1) == 255
        inside = bands.any(axis=0)
        if not inside.any():
            empty += 1
            continue
        clear.append(bands[:, inside & ~gt])
        cloud.append(bands[:, inside & gt])
        covers.append((gt[inside].sum(), inside.sum()))
    return np.concatenate(clear, axis=1), np.concatenate(cloud, axis=1), covers, empty, len(patches)


def test_statistics_resemble_the_real_sample(stats_root, real_sample_root):
    clear, cloud, covers, empty, total = _pixels(stats_root)
    real_clear, real_cloud, _, _, _ = _pixels(real_sample_root)
    clear_med, cloud_med = np.median(clear, axis=1), np.median(cloud, axis=1)
    real_clear_med = np.median(real_clear, axis=1)
    # Clear land: red ~9k and NIR ~17k in the real sample.
    assert 6000 <= clear_med[0] <= 12000 and abs(clear_med[0] - real_clear_med[0]) < 2500
    assert 12000 <= clear_med[3] <= 22000
    # Over cloud the visible bands are 2-3x brighter than clear (real: 2.4-2.7x), NIR less so.
    ratio = cloud_med / clear_med
    real_ratio = np.median(real_cloud, axis=1) / real_clear_med
    assert np.all((ratio[:3] >= 2.0) & (ratio[:3] <= 3.0)), ratio
    assert np.all(np.abs(ratio - real_ratio) < 0.5), (ratio, real_ratio)
    assert 1.3 <= ratio[3] <= 2.0, ratio
    assert ratio[3] < ratio[:3].min()
    # Some patches lie wholly outside the tilted footprint; overall cloud cover is moderate.
    assert empty >= 1
    cover = sum(c for c, _ in covers) / sum(n for _, n in covers)
    assert 0.05 <= cover <= 0.80
    # Per-scene cover varies: some nearly clear patches, some nearly overcast.
    per_patch = np.array([c / n for c, n in covers])
    assert (per_patch < 0.05).any() and (per_patch > 0.9).any()
    assert clear.max() <= 65535 and total == len(discover_patches(stats_root, subset="train"))


def test_bright_confusers_and_thin_clouds_make_the_task_non_trivial(stats_root):
    # A single brightness threshold must not separate cloud from clear: snow, sand and thin clouds
    # overlap in brightness, so the best threshold on the visible mean still errs on > 2% of pixels.
    clear, cloud, _, _, _ = _pixels(stats_root)
    vis_clear, vis_cloud = clear[:3].mean(axis=0), cloud[:3].mean(axis=0)
    values = np.concatenate([vis_clear, vis_cloud])
    labels = np.concatenate([np.zeros(vis_clear.size, bool), np.ones(vis_cloud.size, bool)])
    order = np.argsort(values)
    labels = labels[order]
    # errors(t) = clouds below t + clear at or above t, for every cut position
    errors = np.cumsum(labels) + (np.sum(~labels) - np.cumsum(~labels))
    assert errors.min() / values.size > 0.02


def test_bad_parameters_and_non_empty_output_are_refused(tmp_path):
    with pytest.raises(ValueError, match="scenes"):
        write_synthetic_dataset(tmp_path / "a", scenes=0)
    with pytest.raises(ValueError, match="patch_size"):
        write_synthetic_dataset(tmp_path / "a", patch_size=4)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        write_synthetic_dataset(tmp_path / "full", scenes=1)
