"""Synthetic Landsat-8 datasets written in the real 38-Cloud / 95-Cloud layout.

Scenes come from :mod:`harness.data.synth_scene`; this module cuts each into patches under the real file
names and folder names (``train_<band>/``, ``train_gt/``, ``Entire_scene_gts/``, the patch, non-empty
and scene-id CSVs, a ``38-Cloud_test`` tree without ground truth and, on request, a 95-Cloud style
additional tree), so the loader reads it exactly as it reads the download. PackBits TIFFs without dates
or descriptions: the same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile

from harness.errors import InputError

from .layout import BANDS, GT, PatchId, is_nonempty
from .synth_scene import Scene, make_scene

TRAIN_DIR = "38-Cloud_training"
TEST_DIR = "38-Cloud_test"
ADDITIONAL_DIR = "95-cloud_training_only_additional_to38-cloud"
SCENE_GT_DIR = "Entire_scene_gts"
#: Defaults of `write_synthetic_dataset`; `prepare.py` hashes the filled-in parameters.
DEFAULTS: dict[str, object] = {
    "scenes": 6,
    "patch_size": 64,
    "seed": 0,
    "test_scenes": None,
    "additional_scenes": 0,
    "grid": (4, 6),
}


# --------------------------------------------------------------------------------------- writing
def _imwrite(path: Path, arr: np.ndarray) -> None:
    # metadata=None: no tifffile JSON description, like the real files; no dates, so bytes repeat.
    tifffile.imwrite(path, arr, compression="packbits", photometric="minisblack", metadata=None)


def _write_csv(path: Path, names: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name"])
        w.writerows([n] for n in names)


def _write_scene(scene: Scene, tree: Path, prefix: str, suffix: str, with_gt: bool) -> tuple[list, list]:
    """Cut a scene into patch files; returns (patch names, non-empty patch names)."""
    px = scene.bands.shape[1] // scene.rows
    names, nonempty = [], []
    for r in range(1, scene.rows + 1):
        for c in range(1, scene.cols + 1):
            pid = PatchId((r - 1) * scene.cols + c, r, c, scene.scene_id)
            window = (slice((r - 1) * px, r * px), slice((c - 1) * px, c * px))
            patch = scene.bands[(slice(None), *window)]
            for i, band in enumerate(BANDS):
                _imwrite(tree / f"{prefix}_{band}{suffix}" / pid.filename(band), patch[i])
            if with_gt:
                _imwrite(tree / f"{prefix}_gt{suffix}" / pid.filename(GT), scene.gt[window] * np.uint8(255))
            names.append(pid.name)
            if is_nonempty(patch):
                nonempty.append(pid.name)
    return names, nonempty


def _make_tree(tree: Path, prefix: str, suffix: str, with_gt: bool, scene_gts: bool) -> None:
    bands = [*BANDS, GT] if with_gt else list(BANDS)
    for band in bands:
        (tree / f"{prefix}_{band}{suffix}").mkdir(parents=True)
    if scene_gts:
        (tree / SCENE_GT_DIR).mkdir()


def write_synthetic_dataset(
    out: str | Path,
    *,
    scenes: int = 6,
    patch_size: int = 64,
    seed: int = 0,
    test_scenes: int | None = None,
    additional_scenes: int = 0,
    grid: tuple[int, int] = (4, 6),
) -> Path:
    """Write a synthetic dataset in the 38-Cloud layout under `out` and return `out`.

    `out/38-Cloud_training/` gets `scenes` scenes (train_<band>/, train_gt/, Entire_scene_gts/, patch,
    non-empty and scene-id CSVs); `out/38-Cloud_test/` gets `test_scenes` more (default scenes // 3;
    no test_gt/, as in the real test set); `additional_scenes` > 0 also writes a 95-Cloud style
    `95-cloud_training_only_additional_to38-cloud/` tree. Each scene is a grid of rows x cols patches
    of `patch_size` pixels, rows and cols drawn from `grid` (inclusive). `out` must not exist or be empty.
    `scenes=0` with `test_scenes` > 0 writes the `38-Cloud_test/` tree alone.
    """
    if scenes < 0 or (scenes == 0 and not test_scenes):
        raise InputError(f"scenes must be >= 1 (0 only with test_scenes: a test tree alone), got {scenes}")
    if patch_size < 8:
        raise InputError(f"patch_size must be >= 8, got {patch_size}")
    if grid[0] < 1 or grid[1] < grid[0]:
        raise InputError(f"grid must be (min, max) with 1 <= min <= max, got {grid}")
    test_scenes = scenes // 3 if test_scenes is None else test_scenes
    if test_scenes < 0 or additional_scenes < 0:
        raise InputError("test_scenes and additional_scenes must be >= 0")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"synthetic dataset output folder is not empty: {out}")
    out.mkdir(parents=True, exist_ok=True)

    plan = [
        (TRAIN_DIR, "train", "", True, scenes),
        (ADDITIONAL_DIR, "train", "_additional_to38cloud", True, additional_scenes),
        (TEST_DIR, "test", "", False, test_scenes),
    ]
    index = 0
    seen_ids: set[str] = set()
    all_nonempty: list[str] = []
    for folder, prefix, suffix, with_gt, count in plan:
        if count == 0:
            continue
        tree = out / folder
        is_95 = folder == ADDITIONAL_DIR
        _make_tree(tree, prefix, suffix, with_gt, scene_gts=not is_95)
        names, nonempty, ids = [], [], []
        for _ in range(count):
            scene = make_scene(seed, index, patch_size=patch_size, grid=grid)
            index += 1
            if scene.scene_id in seen_ids:  # astronomically rare; a duplicate id would merge scenes
                raise RuntimeError(f"duplicate synthetic scene id {scene.scene_id}; try another seed")
            seen_ids.add(scene.scene_id)
            n, ne = _write_scene(scene, tree, prefix, suffix, with_gt)
            names += n
            nonempty += ne
            ids.append(scene.scene_id)
            if not is_95:
                _imwrite(tree / SCENE_GT_DIR / f"edited_corrected_gts_{scene.scene_id}.TIF", scene.scene_gt)
        if folder == TRAIN_DIR:
            _write_csv(tree / "training_patches_38-Cloud.csv", names)
            _write_csv(tree / "training_patches_38-cloud_nonempty.csv", nonempty)
            _write_csv(tree / "training_sceneids_38-Cloud.csv", ids)
            all_nonempty += nonempty
        elif is_95:
            _write_csv(tree / "training_patches_95-cloud_additional_to_38-cloud.csv", names)
            # As in the real download, 95-Cloud's non-empty list covers the 38-Cloud scenes too.
            _write_csv(tree / "training_patches_95-cloud_nonempty.csv", all_nonempty + nonempty)
        else:
            _write_csv(tree / "test_patches_38-Cloud.csv", names)
            _write_csv(tree / "test_sceneids_38-Cloud.csv", ids)
    return out
