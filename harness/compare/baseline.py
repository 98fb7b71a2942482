"""A per-pixel logistic regression on the four log-bands: the floor a segmentation network must clear.

It sees one pixel at a time (no neighbourhood, no shape, no shadow next to a cloud), so whatever it gets
right is brightness and colour alone. When it scores close to the networks, the data cannot rank
architectures: the differences left are too small to be about spatial modelling. Every final comparison
reports it beside the networks, on the same test pixels, scored from the same kind of confusion counts.

The fit is Newton's method (iteratively reweighted least squares) with a small L2 penalty on a seeded
sample of training pixels; features are ``log1p`` of each band's DN, standardised on that sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.cache import open_cache
from harness.data.prepare import PreparedData
from harness.metrics import ConfusionAccumulator

#: Pixels sampled from the training split to fit the 5 weights: far more than they need.
FIT_PIXELS = 200_000


@dataclass(frozen=True)
class PixelLogistic:
    """Weights (bias first) over standardised ``log1p`` band values."""

    weights: np.ndarray  # (5,)
    mean: np.ndarray  # (4,)
    std: np.ndarray  # (4,)

    def probability(self, images: np.ndarray) -> np.ndarray:
        """P(cloud) per pixel of uint16 images (N, 4, H, W) -> (N, H, W) float64."""
        z = (np.log1p(images.astype(np.float64)) - self.mean[None, :, None, None]) / self.std[None, :, None, None]
        logit = self.weights[0] + np.einsum("nchw,c->nhw", z, self.weights[1:])
        return 1.0 / (1.0 + np.exp(-logit))


def fit_pixel_logistic(
    pixels: np.ndarray, labels: np.ndarray, *, l2: float = 1e-4, iterations: int = 50
) -> PixelLogistic:
    """Fit P(cloud | one pixel's 4 band DNs) by IRLS: ``pixels`` (P, 4) DN, ``labels`` (P,) 0/1."""
    x = np.log1p(pixels.astype(np.float64))
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-12
    design = np.hstack([np.ones((len(x), 1)), (x - mean) / std])
    y = labels.astype(np.float64)
    w = np.zeros(design.shape[1])
    penalty = l2 * len(y) * np.diag([0.0, 1.0, 1.0, 1.0, 1.0])  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(w)), gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return PixelLogistic(w, mean, std)


def _sample_pixels(images, masks, rows: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = masks.shape[-2:]
    picks = np.sort(rng.choice(len(rows) * h * w, size=min(n, len(rows) * h * w), replace=False))
    which, flat = np.divmod(picks, h * w)
    pixels = np.empty((len(picks), 4), np.uint16)
    labels = np.empty(len(picks), np.uint8)
    for k in np.unique(which):  # one patch read at a time: the cache is memory-mapped
        sel = which == k
        yy, xx = np.divmod(flat[sel], w)
        image, mask = np.asarray(images[rows[k]]), np.asarray(masks[rows[k]])
        pixels[sel] = image[:, yy, xx].T
        labels[sel] = mask[yy, xx]
    return pixels, labels


def pixel_baseline(data: PreparedData, *, seed: int = 0, batch: int = 64) -> dict:
    """Fit on training pixels, score the test split: ``confusion_stats`` of the pooled test pixels."""
    cache = open_cache(data.cache_dir)
    model = fit_pixel_logistic(*_sample_pixels(cache.images, cache.masks, data.indices("train"), FIT_PIXELS, seed))
    counts = ConfusionAccumulator()
    test = data.indices("test")
    for start in range(0, len(test), batch):
        rows = test[start : start + batch]
        counts.update(model.probability(np.asarray(cache.images[rows])) > 0.5, np.asarray(cache.masks[rows]))
    return counts.stats()
