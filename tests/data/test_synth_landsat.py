"""Synthetic Landsat-8 scene folders: the USGS file names, a CRS and transform, a fill border in QA, byte-stable."""

import hashlib

import numpy as np
import rasterio

from harness.data.__main__ import main as data_main
from harness.data.layout import BANDS, LANDSAT_BANDS, LANDSAT_FILL_BIT
from harness.data.synth_scene import make_scene


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_scene_folder_holds_the_four_bands_its_quality_band_and_its_ground_truth(tmp_path, capsys):
    assert data_main(["synth", "--layout", "landsat", "--out", str(tmp_path / "a"), "--patch-size", "64"]) == 0
    (folder,) = (tmp_path / "a").iterdir()
    scene_id = folder.name
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{scene_id}_{b}.TIF" for b in ("B2", "B3", "B4", "B5")] + [f"{scene_id}_GT.TIF", f"{scene_id}_QA_PIXEL.TIF"]
    )
    assert f"wrote scene {folder}" in capsys.readouterr().out
    scene = make_scene(0, 0, patch_size=64, grid=(3, 4))
    assert scene.scene_id == scene_id
    h, w = scene.scene_gt.shape
    oy, ox = (scene.bands.shape[1] - h) // 2, (scene.bands.shape[2] - w) // 2
    for i, band in enumerate(BANDS):
        with rasterio.open(folder / f"{scene_id}_{LANDSAT_BANDS[band]}.TIF") as src:
            assert (src.count, src.dtypes, src.crs.to_epsg(), src.res) == (1, ("uint16",), 32617, (30.0, 30.0))
            assert np.array_equal(src.read(1), scene.bands[i, oy : oy + h, ox : ox + w])  # the generator's scene
    with rasterio.open(folder / f"{scene_id}_GT.TIF") as src:
        gt = src.read(1)
    assert set(np.unique(gt)) <= {0, 255} and np.array_equal(gt == 255, scene.scene_gt == 1)
    with rasterio.open(folder / f"{scene_id}_B2.TIF") as src:
        border, transform = src.read(1) == 0, src.transform
    assert border[0, 0] and border.mean() > 0.05 and not (gt[border] == 255).any()  # a tilted footprint
    with rasterio.open(folder / f"{scene_id}_QA_PIXEL.TIF") as src:
        assert (src.count, src.dtypes, src.transform, src.crs.to_epsg()) == (1, ("uint16",), transform, 32617)
        qa = src.read(1)
    # Collection 2's bit 0 (fill) set exactly outside the footprint, and no other bit anywhere.
    assert np.array_equal(qa, np.where(scene.bands[:, oy : oy + h, ox : ox + w].any(axis=0), 0, LANDSAT_FILL_BIT))


def test_the_same_seed_writes_the_same_bytes(tmp_path):
    for name in ("a", "b"):
        data_main(["synth", "--layout", "landsat", "--out", str(tmp_path / name), "--patch-size", "32", "--seed", "4"])
    (a,), (b,) = (tmp_path / "a").iterdir(), (tmp_path / "b").iterdir()
    assert digest(a) == digest(b)
