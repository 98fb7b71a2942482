"""Tiles over a large image and the weights that blend their predictions without seams (numpy only).

A scene is predicted tile by tile: tiles of ``tile`` pixels overlap by ``overlap`` on every side that has a
neighbour, and each tile's output is weighted by a window that falls to a small value at its edges, where
a fully convolutional network sees zero padding instead of the scene; the weighted sum divided by the sum
of the weights is the blended prediction. Where only one tile covers a pixel (the scene's own border) its
weight is irrelevant: the division leaves that tile's value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """One tile: its top-left corner and size in the image."""

    row: int
    col: int
    height: int
    width: int


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length`` px, consecutive ones sharing ``overlap`` px.

    The last tile ends exactly at ``length`` (it overlaps its neighbour more when the length does not fit);
    an image shorter than a tile is one tile starting at 0 (it is padded by the caller).
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"tiles: need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Every tile over a ``height`` x ``width`` image, row by row."""
    return [
        Tile(r, c, min(tile, height), min(tile, width))
        for r in tile_starts(height, tile, overlap)
        for c in tile_starts(width, tile, overlap)
    ]


def blend_window(tile: int, overlap: int, floor: float = 1e-3) -> np.ndarray:
    """A ``tile`` x ``tile`` weight: 1 inside, a cosine ramp over the outer ``overlap`` px down to ``floor``."""
    ramp = np.ones(tile)
    if overlap > 0:
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        ramp[:overlap] = np.maximum(edge, floor)
        ramp[-overlap:] = np.maximum(edge[::-1], floor)
    return np.outer(ramp, ramp)


__all__ = ["Tile", "blend_window", "tile_starts", "tiles"]
