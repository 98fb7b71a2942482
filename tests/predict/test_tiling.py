"""Tiles over a scene and their blending weights."""

import itertools

import numpy as np
import pytest

from harness.predict.tiling import blend_window, tile_starts, tiles


@pytest.mark.parametrize(("length", "tile", "overlap"), [(1000, 384, 64), (384, 384, 64), (385, 384, 0), (700, 64, 16)])
def test_tiles_cover_every_pixel_and_neighbours_share_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, int)
    for s in starts:
        covered[s : s + tile] += 1
    assert covered.min() >= 1 and starts[0] == 0 and starts[-1] + tile == length
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))


def test_a_short_image_is_one_tile_and_bad_settings_are_refused():
    assert tile_starts(100, 384, 64) == [0]
    assert len(tiles(100, 900, 384, 64)) == len(tile_starts(900, 384, 64))
    for tile, overlap in ((0, 0), (64, 64), (64, -1)):
        with pytest.raises(ValueError, match="overlap < tile"):
            tile_starts(500, tile, overlap)


def test_the_window_is_one_inside_and_ramps_down_symmetrically_over_the_overlap():
    w = blend_window(64, 16)
    assert w.shape == (64, 64) and np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    assert np.all(w[16:48, 16:48] == 1)
    assert 0 < w[0, 0] < w[0, 8] < w[0, 15] < 1 and w[0, 32] == w[0, 32:].max()
    assert np.all(blend_window(64, 0) == 1)
