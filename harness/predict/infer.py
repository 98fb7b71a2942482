"""Mask a whole scene with a trained network: tiled, blended, read and written a strip at a time.

Memory is bounded by one strip of tiles (``tile`` rows of the scene's full width, four bands) and an
accumulator twice that height, whatever the scene's size: strip by strip, the tiles are predicted in
batches, their cloud probabilities blended (:mod:`harness.predict.tiling`), and the rows no later tile
covers are written to the mask GeoTIFF (same CRS and transform as the input). The scene's fill (outside
its footprint: :meth:`~harness.predict.scene.LandsatScene.footprint`) is ``NODATA`` in the mask. The output
is written beside its final name and renamed when whole, so a failed run leaves no half-written mask.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from tqdm import tqdm

from harness.predict.preprocessing import Preprocessing
from harness.predict.scene import LandsatScene
from harness.predict.tiling import blend_window, tile_starts

#: The mask's values: 0 clear, 255 cloud, NODATA outside the scene's footprint.
CLEAR, CLOUD, NODATA = 0, 255, 128


def mask_path(out_dir: Path, scene_id: str) -> Path:
    """Where the mask of ``scene_id`` goes: ``<out>/<ID>_cloudmask.TIF``."""
    return out_dir / f"{scene_id}_cloudmask.TIF"


def probability_path(out_dir: Path, scene_id: str) -> Path:
    """Where its cloud probability goes (float32, NaN outside the footprint): ``<out>/<ID>_cloudprob.TIF``."""
    return out_dir / f"{scene_id}_cloudprob.TIF"


def cloud_probability(model: torch.nn.Module, batch: np.ndarray, device: torch.device) -> np.ndarray:
    """(N, 4, h, w) network input -> (N, h, w) float32 softmax probability of cloud."""
    with torch.inference_mode():
        logits = model(torch.from_numpy(batch).to(device))
        if isinstance(logits, list | tuple):  # deep supervision: the last head is the prediction
            logits = logits[-1]
        return torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()


def predict_scene(
    model: torch.nn.Module,
    preprocessing: Preprocessing,
    scene: LandsatScene,
    out_dir: str | Path,
    *,
    tile: int = 384,
    overlap: int = 64,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    probability: bool = False,
    progress: bool = True,
) -> Path:
    """Write the scene's cloud mask (and optionally its probability) into ``out_dir``; returns the mask's path."""
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    height, width = scene.height, scene.width
    weight = blend_window(tile, overlap).astype(np.float32)
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    profile = {k: scene.profile[k] for k in ("crs", "transform", "width", "height")}
    profile |= {"driver": "GTiff", "count": 1, "compress": "deflate", "tiled": True, "blockxsize": 256}
    profile |= {"blockysize": 256}
    targets = [(mask_path(out_dir, scene.scene_id), {"dtype": "uint8", "nodata": NODATA})]
    if probability:
        targets.append((probability_path(out_dir, scene.scene_id), {"dtype": "float32", "nodata": float("nan")}))
    partial = [path.with_name(f".{path.name}.partial") for path, _ in targets]
    sinks = [rasterio.open(tmp, "w", **profile, **extra) for tmp, (_, extra) in zip(partial, targets, strict=True)]
    # Rows [base, base + buffer height) of the blended sums; rows above a strip's start are final.
    numer = np.zeros((2 * tile, width), np.float32)
    denom = np.zeros_like(numer)
    valid = np.zeros(numer.shape, bool)
    base = 0

    def flush(upto: int) -> None:
        nonlocal base, numer, denom, valid
        n = upto - base
        if n <= 0:
            return
        prob = numer[:n] / np.maximum(denom[:n], 1e-12)
        window = Window(0, base, width, n)
        mask = np.where(prob > preprocessing.threshold, CLOUD, CLEAR).astype(np.uint8)
        sinks[0].write(np.where(valid[:n], mask, NODATA).astype(np.uint8), 1, window=window)
        if probability:
            sinks[1].write(np.where(valid[:n], prob, np.nan).astype(np.float32), 1, window=window)
        numer, denom, valid = (np.roll(a, -n, axis=0) for a in (numer, denom, valid))
        numer[-n:], denom[-n:], valid[-n:] = 0, 0, False
        base = upto

    try:
        bar = tqdm(rows, desc=f"predict {scene.scene_id}", unit="strip", disable=not progress)
        for r in bar:
            h = min(tile, height)
            flush(r)  # no tile starting at or after r covers a row above it
            dn = scene.read(Window(0, r, width, h), preprocessing.bands)
            image = preprocessing.apply(dn)
            inside = scene.footprint(Window(0, r, width, h), dn)
            off = r - base
            valid[off : off + h] |= inside
            if h < tile or width < tile:  # a scene smaller than a tile: pad to the tile (zeros = outside)
                image = np.pad(image, ((0, 0), (0, tile - h), (0, max(0, tile - width))))
            crops = [image[:, :tile, c : c + tile] for c in cols]
            probs = np.concatenate(
                [
                    cloud_probability(model, np.stack(crops[i : i + batch_size]), device)
                    for i in range(0, len(crops), batch_size)
                ]
            )
            for c, p in zip(cols, probs, strict=True):
                w = min(tile, width)
                numer[off : off + h, c : c + w] += (p * weight)[:h, :w]
                denom[off : off + h, c : c + w] += weight[:h, :w]
        flush(height)
    except BaseException:
        for sink in sinks:
            sink.close()
        for tmp in partial:
            tmp.unlink(missing_ok=True)
        raise
    for sink in sinks:
        sink.close()
    for tmp, (path, _) in zip(partial, targets, strict=True):
        os.replace(tmp, path)
    return targets[0][0]


__all__ = ["CLEAR", "CLOUD", "NODATA", "mask_path", "predict_scene", "probability_path"]
