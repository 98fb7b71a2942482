"""Mask the patches of a 38-Cloud/95-Cloud-layout tree: one mask file per patch, named after it.

For data already cut into the datasets' 384 px patches (``*_red/``, ``*_green/``, ``*_blue/``, ``*_nir/``
folders, no geo tags): each patch is predicted whole, as the network was trained, and written as
``<out>/<patch name>_cloudmask.TIF`` (uint8, 0 clear, 255 cloud, ``NODATA`` where the patch has no data),
with the same values as a scene's mask (:mod:`harness.predict.infer`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch
from tqdm import tqdm

from harness.data.decode import patch_shape, read_patch
from harness.data.layout import PatchFiles, discover_patches
from harness.errors import InputError
from harness.predict.infer import CLEAR, CLOUD, NODATA, cloud_probability
from harness.predict.model import TrainedNetwork


def find_patches(folder: str | Path) -> list[PatchFiles]:
    """Every patch of the 38-Cloud/95-Cloud tree(s) under ``folder`` (training and test); empty when none."""
    return discover_patches(folder)


def read_patches(patches: list[PatchFiles]) -> np.ndarray:
    """(N, 4, H, W) uint16 digital numbers of ``patches``; InputError naming the first bad file."""
    shape = patch_shape(patches)
    if shape is None:
        raise InputError(f"no readable patch among {patches[0].paths()[0] if patches else 'no patches'}")
    images = []
    for pf in patches:
        image, _, problems = read_patch(pf, shape)
        if problems:
            raise InputError(f"{problems[0].path}: {problems[0].message}")
        images.append(image)
    return np.stack(images)


def predict_patches(
    network: TrainedNetwork,
    patches: list[PatchFiles],
    out_dir: str | Path,
    *,
    device: torch.device,
    batch_size: int = 8,
    progress: bool = True,
) -> list[Path]:
    """Write one mask per patch into ``out_dir``; returns their paths (in ``patches`` order)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    bar = tqdm(total=len(patches), desc="predict patches", unit="patch", disable=not progress)
    for start in range(0, len(patches), batch_size):
        chunk = patches[start : start + batch_size]
        images = read_patches(chunk)
        network.check_tile(images[0].shape[-1])
        prob = cloud_probability(network.model, np.stack([network.preprocessing.apply(i) for i in images]), device)
        for pf, image, p in zip(chunk, images, prob, strict=True):
            mask = np.where(p > network.preprocessing.threshold, CLOUD, CLEAR)
            mask = np.where(image.any(axis=0), mask, NODATA).astype(np.uint8)
            path = out_dir / f"{pf.patch.name}_cloudmask.TIF"
            tifffile.imwrite(path, mask, compression="deflate")
            written.append(path)
        bar.update(len(chunk))
    bar.close()
    return written


__all__ = ["find_patches", "predict_patches", "read_patches"]
