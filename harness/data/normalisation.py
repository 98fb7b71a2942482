"""How band values are scaled for a network: the ``normalisation`` vocabulary and per-band statistics (numpy only).

``scale`` divides the 16-bit digital numbers by 65535 (Cloud-Net's scaling); ``standardise`` subtracts the
train split's per-band mean and divides by its standard deviation (:func:`band_stats`). The torch
Dataset that applies them is :class:`harness.data.dataset.CloudPatchDataset`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cache import open_cache

#: Cloud-Net's scaling: DN / 65535.
SCALE = 1.0 / 65535.0
NORMALISATIONS = ("scale", "standardise")


def band_stats(
    cache_dir: str | Path, indices: np.ndarray | list[int], *, max_patches: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (mean[4], std[4]) in DN over the given cache rows (float64).

    No-data pixels (zero in every band, outside the scene footprint) are left out: they would pull
    the statistics towards zero. At most `max_patches` evenly spaced rows are read, which is plenty
    for four numbers and keeps this fast on 50 GB caches.
    """
    cache = open_cache(cache_dir)
    rows = np.sort(np.asarray(indices, dtype=np.int64))
    if rows.size == 0:
        raise ValueError("band_stats needs at least one patch index")
    if rows.size > max_patches:
        rows = rows[np.linspace(0, rows.size - 1, max_patches).round().astype(np.int64)]
    total = np.zeros(4)
    total_sq = np.zeros(4)
    count = 0
    for start in range(0, rows.size, 64):  # chunks keep memory small whatever the patch size
        block = np.asarray(cache.images[rows[start : start + 64]], dtype=np.float64)
        valid = np.any(block != 0, axis=1)  # (n, H, W)
        n = int(valid.sum())
        if n == 0:
            continue
        pix = block.transpose(1, 0, 2, 3)[:, valid]  # (4, n)
        total += pix.sum(axis=1)
        total_sq += (pix * pix).sum(axis=1)
        count += n
    if count == 0:
        raise ValueError("band_stats: the selected patches hold no valid (non-zero) pixels")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return mean, np.maximum(std, 1e-6)
