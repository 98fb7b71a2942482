"""Synthetic Landsat-8 Collection scene folders: the four band GeoTIFFs with a CRS, a transform and a nodata border.

``cloudmask data synth --layout landsat`` writes one folder per scene, ``<ID>/<ID>_B2.TIF`` ... ``<ID>_B5.TIF``
(blue, green, red, NIR: uint16, single band, deflate-compressed, EPSG:32617 UTM with 30 m pixels), its quality
band ``<ID>_QA_PIXEL.TIF`` (uint16; of Collection 2's bits it sets only bit 0, fill, outside the footprint: a
synthetic scene has no CFMask to fill the others) and its ground truth ``<ID>_GT.TIF`` (uint8, 0 clear / 255
cloud), from the same generator as the patch datasets (:func:`harness.data.synth_scene.make_scene`): its
scene-sized central crop, 0 in every band outside the tilted footprint, as a real scene. ``cloudmask predict``
reads it as it reads a downloaded scene.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from harness.data.layout import BANDS, LANDSAT_BANDS, LANDSAT_FILL_BIT
from harness.data.synth_scene import make_scene

CRS = "EPSG:32617"  # UTM zone 17N, where 38-Cloud's path 002 scenes lie
PIXEL_M = 30.0


def write_landsat_scenes(out: str | Path, *, scenes: int = 1, seed: int = 0, patch_size: int = 384) -> list[Path]:
    """Write ``scenes`` scene folders under ``out``; returns them. Same seed, same bytes."""
    out = Path(out)
    folders = []
    for index in range(scenes):
        scene = make_scene(seed, index, patch_size=patch_size, grid=(3, 4))
        h, w = scene.scene_gt.shape
        oy, ox = (scene.bands.shape[1] - h) // 2, (scene.bands.shape[2] - w) // 2
        bands = scene.bands[:, oy : oy + h, ox : ox + w]
        folder = out / scene.scene_id
        folder.mkdir(parents=True, exist_ok=True)
        # A distinct origin per scene, as real scenes are elsewhere on the ground.
        transform = Affine(PIXEL_M, 0.0, 300000.0 + 250000.0 * index, 0.0, -PIXEL_M, 4500000.0)
        profile = {"driver": "GTiff", "height": h, "width": w, "count": 1, "crs": CRS, "transform": transform}
        profile |= {"compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256}
        for i, band in enumerate(BANDS):
            path = folder / f"{scene.scene_id}_{LANDSAT_BANDS[band]}.TIF"
            with rasterio.open(path, "w", dtype="uint16", **profile) as dst:
                dst.write(bands[i], 1)
        fill = np.where(bands.any(axis=0), 0, LANDSAT_FILL_BIT).astype(np.uint16)
        with rasterio.open(folder / f"{scene.scene_id}_QA_PIXEL.TIF", "w", dtype="uint16", **profile) as dst:
            dst.write(fill, 1)
        with rasterio.open(folder / f"{scene.scene_id}_GT.TIF", "w", dtype="uint8", **profile) as dst:
            dst.write((scene.scene_gt * 255).astype(np.uint8), 1)
        folders.append(folder)
    return folders


__all__ = ["write_landsat_scenes"]
