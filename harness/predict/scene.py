"""A Landsat-8 Collection scene folder on disk: its band GeoTIFFs, checked, read window by window (rasterio).

A scene folder holds the USGS band files ``<ID>_B2.TIF`` ... ``<ID>_B5.TIF`` (blue, green, red, NIR), 16-bit
single-band GeoTIFFs of one size, CRS and transform; other bands and metadata files may sit beside them.
Outside the scene's tilted footprint is the scene's fill, kept nodata in the mask. Where the scene's quality band
sits beside its bands (``<ID>_QA_PIXEL.TIF`` in Collection 2, ``<ID>_BQA.TIF`` in Collection 1), its bit 0
("fill", USGS's definition) says which pixels those are; without it, a pixel is fill when it is 0 in every band
(what a Level-1 scene writes there). Level-2 surface-reflectance bands (``<ID>_SR_B2.TIF`` ...) are refused: the
networks are trained on 38-Cloud's Level-1 digital numbers, a different quantity on a different scale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from harness.data.layout import LANDSAT_BANDS, LANDSAT_FILL_BIT, LANDSAT_QA_SUFFIXES
from harness.errors import InputError
from harness.predict.preprocessing import Preprocessing

_BAND_FILE = re.compile(r"^(?P<id>.+)_(?P<band>B\d{1,2})\.TIF$", re.IGNORECASE)


@dataclass(frozen=True)
class LandsatScene:
    """One scene: its id, the file of each 38-Cloud band, the grid they share, and its quality band if present."""

    scene_id: str
    files: dict[str, Path]  # 38-Cloud band name -> band file
    height: int
    width: int
    profile: dict
    qa: Path | None = None

    def read(self, window: Window, bands: tuple[str, ...]) -> np.ndarray:
        """(len(bands), h, w) digital numbers of ``window`` (clipped to the scene), in ``bands`` order."""
        out = []
        for band in bands:
            with rasterio.open(self.files[band]) as src:
                out.append(src.read(1, window=window))
        return np.stack(out)

    def footprint(self, window: Window, dn: np.ndarray) -> np.ndarray:
        """(h, w) bool: the pixels of ``window`` inside the scene (not fill); ``dn`` is :meth:`read`'s array there."""
        if self.qa is None:
            return dn.any(axis=0)
        with rasterio.open(self.qa) as src:
            return (src.read(1, window=window) & LANDSAT_FILL_BIT) == 0


def find_scene(folder: str | Path, preprocessing: Preprocessing) -> LandsatScene:
    """The scene in ``folder``, every band ``preprocessing`` needs checked; InputError naming the file otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (expected a Landsat-8 scene folder with *_B2.TIF ... *_B5.TIF)")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        match = _BAND_FILE.match(path.name)
        if match:
            found.setdefault(match["id"], {})[match["band"].upper()] = path
    wanted = [LANDSAT_BANDS[b] for b in preprocessing.bands]
    complete = {sid: files for sid, files in found.items() if set(wanted) <= set(files)}
    if len(complete) != 1:
        missing = {sid: sorted(set(wanted) - set(files)) for sid, files in found.items()}
        detail = "; ".join(f"{sid}: missing {', '.join(m)}" for sid, m in missing.items() if m) or "no band files"
        raise InputError(
            f"{folder}: expected one Landsat-8 scene with bands {', '.join(wanted)} (files <ID>_B2.TIF ...), "
            f"found {len(complete)} complete ({detail})"
        )
    ((scene_id, by_band),) = complete.items()
    files = {b: by_band[LANDSAT_BANDS[b]] for b in preprocessing.bands}
    if scene_id.upper().endswith("_SR"):
        raise InputError(
            f"{files[preprocessing.bands[0]]}: a Level-2 surface-reflectance band; the network was trained on "
            "Level-1 digital numbers (38-Cloud's), a different quantity on a different scale: mask this scene's "
            "Level-1 product (<ID>_B2.TIF ... from an L1TP download) instead"
        )
    qa = _quality_band(folder, scene_id)
    reference = None
    checks = [(path, preprocessing.dtype, "Landsat-8 digital numbers") for path in files.values()]
    if qa is not None:
        checks.append((qa, "uint16", "the scene's bit-packed quality band"))
    for path, dtype, what in checks:
        try:
            with rasterio.open(path) as src:
                grid = (src.height, src.width, src.crs, src.transform)
                if src.count != 1 or src.dtypes[0] != dtype:
                    raise InputError(
                        f"{path}: expected one {dtype} band ({what}), "
                        f"got {src.count} band(s) of {', '.join(src.dtypes)}"
                    )
                if reference is None:
                    reference, profile = (path, grid), src.profile.copy()
                elif grid != reference[1]:
                    raise InputError(
                        f"{path}: its size, CRS or transform differs from {reference[0].name}'s "
                        f"({grid[0]}x{grid[1]} {grid[2]} vs {reference[1][0]}x{reference[1][1]} {reference[1][2]})"
                    )
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"{path}: not a readable GeoTIFF: {exc}") from None
    height, width = reference[1][0], reference[1][1]
    return LandsatScene(scene_id, files, height, width, profile, qa)


def _quality_band(folder: Path, scene_id: str) -> Path | None:
    """The scene's quality band file in ``folder`` (Collection 2's first), whatever the case of its name; or None."""
    by_name = {path.name.upper(): path for path in folder.iterdir()}
    for suffix in LANDSAT_QA_SUFFIXES:
        if (path := by_name.get(f"{scene_id}_{suffix}.TIF".upper())) is not None:
            return path
    return None


__all__ = ["LandsatScene", "find_scene"]
