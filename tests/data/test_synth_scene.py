"""One synthetic scene, before it is cut into files: seeded, framed like a real scene, masked like an annotator."""

import numpy as np

from harness.data.synth_scene import GT_OPACITY, make_scene


def test_a_scene_is_fixed_by_seed_and_index():
    a, b = make_scene(7, 0, patch_size=32, grid=(2, 3)), make_scene(7, 0, patch_size=32, grid=(2, 3))
    assert a.scene_id == b.scene_id
    assert np.array_equal(a.bands, b.bands) and np.array_equal(a.gt, b.gt)
    c = make_scene(7, 1, patch_size=32, grid=(2, 3))
    assert c.scene_id != a.scene_id and not np.array_equal(c.bands[:, :32, :32], a.bands[:, :32, :32])


def test_the_canvas_is_a_grid_of_patches_with_empty_borders_and_a_0_1_mask():
    scene = make_scene(3, 2, patch_size=32, grid=(2, 4))
    assert 2 <= scene.rows <= 4 and 2 <= scene.cols <= 4
    assert scene.bands.shape == (4, scene.rows * 32, scene.cols * 32) and scene.bands.dtype == np.uint16
    assert scene.gt.shape == scene.bands.shape[1:] and set(np.unique(scene.gt)) <= {0, 1}
    outside = (scene.bands == 0).all(axis=0)
    assert outside[0, 0] and outside.any() and not outside.all(), "a tilted footprint leaves empty corners"
    assert not scene.gt[outside].any(), "nothing outside the footprint is labelled cloud"
    # The scene mask is the footprint's crop of the canvas mask (what Entire_scene_gts holds).
    assert scene.scene_gt.sum() == scene.gt.sum() and scene.scene_gt.size < scene.gt.size
    assert 0 < GT_OPACITY < 1
