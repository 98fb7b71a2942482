"""The torch Dataset over a cache: shapes, dtypes, scaling, seeded dihedral augmentation, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from harness.data.cache import ingest, open_cache
from harness.data.dataset import CloudPatchDataset, band_stats, dihedral
from harness.data.synth import TEST_DIR


@pytest.fixture(scope="module")
def cache(synthetic_cache):
    return open_cache(synthetic_cache)


def test_items_are_scaled_float32_bands_and_int64_masks(synthetic_cache, cache):
    rows = np.array([2, 0, 7])
    ds = CloudPatchDataset(synthetic_cache, rows)
    assert len(ds) == 3
    image, mask = ds[0]
    assert image.dtype == torch.float32 and image.shape == (4, 32, 32)
    assert mask.dtype == torch.int64 and mask.shape == (32, 32)
    for i, row in enumerate(rows):
        image, mask = ds[i]
        np.testing.assert_allclose(image.numpy(), cache.images[row] / 65535.0, rtol=1e-6)
        np.testing.assert_array_equal(mask.numpy(), cache.masks[row])
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_band_stats_and_standardisation(synthetic_cache, cache):
    rows = np.arange(len(cache))
    mean, std = band_stats(synthetic_cache, rows)
    assert mean.dtype == np.float64 and mean.shape == std.shape == (4,)
    pixels = cache.images.transpose(1, 0, 2, 3).reshape(4, -1).astype(np.float64)
    valid = pixels[:, pixels.any(axis=0)]  # no-data (all-zero) pixels are left out
    np.testing.assert_allclose(mean, valid.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(std, valid.std(axis=1), rtol=1e-6)
    assert 6000 < mean[0] < 20000  # DN, not scaled

    ds = CloudPatchDataset(synthetic_cache, rows, normalisation="standardise", band_stats=(mean, std))
    image, _ = ds[int(np.flatnonzero(cache.patches["nonempty"])[0])]
    expected = (cache.images[int(np.flatnonzero(cache.patches["nonempty"])[0])] - mean[:, None, None]) / std[
        :, None, None
    ]
    np.testing.assert_allclose(image.numpy(), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="band_stats"):
        CloudPatchDataset(synthetic_cache, rows, normalisation="standardise")
    with pytest.raises(ValueError, match="normalisation"):
        CloudPatchDataset(synthetic_cache, rows, normalisation="minmax")


def test_dihedral_covers_the_eight_symmetries():
    a = np.arange(12).reshape(3, 4)
    outs = {dihedral(a, k).tobytes() + bytes(dihedral(a, k).shape) for k in range(8)}
    assert len(outs) == 8


def test_augmentation_moves_bands_and_mask_together(synthetic_cache, cache):
    rows = np.flatnonzero(cache.patches["nonempty"].to_numpy())[:12]
    plain = CloudPatchDataset(synthetic_cache, rows)
    aug = CloudPatchDataset(synthetic_cache, rows, augment=True, seed=5)
    used = set()
    for i in range(len(rows)):
        image, mask = plain[i]
        a_image, a_mask = aug[i]
        k = aug.symmetry(i)
        used.add(k)
        # The same symmetry maps every band and the mask: pixels stay aligned with their labels.
        np.testing.assert_array_equal(a_image.numpy(), dihedral(image.numpy(), k))
        np.testing.assert_array_equal(a_mask.numpy(), dihedral(mask.numpy(), k))
    assert len(used) >= 4


def test_augmentation_is_seeded_by_seed_epoch_and_index(synthetic_cache):
    rows = np.arange(40)
    a = CloudPatchDataset(synthetic_cache, rows, augment=True, seed=1)
    b = CloudPatchDataset(synthetic_cache, rows, augment=True, seed=1)
    draws = [a.symmetry(i) for i in range(40)]
    assert draws == [b.symmetry(i) for i in range(40)]
    a.set_epoch(1)
    assert draws != [a.symmetry(i) for i in range(40)]
    a.set_epoch(0)
    assert torch.equal(a[3][0], b[3][0])
    assert [CloudPatchDataset(synthetic_cache, rows, augment=True, seed=2).symmetry(i) for i in range(40)] != draws
    assert CloudPatchDataset(synthetic_cache, rows).symmetry(3) == 0


def test_pickles_without_pixels_and_works_in_dataloader_workers(synthetic_cache):
    ds = CloudPatchDataset(synthetic_cache, np.arange(16), augment=True, seed=3)
    ds[0]  # opens the memmaps in this process
    blob = pickle.dumps(ds)
    assert len(blob) < 4096
    clone = pickle.loads(blob)
    assert torch.equal(clone[5][0], ds[5][0])
    ds.set_epoch(2)
    batches = list(DataLoader(ds, batch_size=8, num_workers=1))
    images = torch.cat([b[0] for b in batches])
    assert images.shape == (16, 4, 32, 32)
    assert torch.equal(images[7], ds[7][0])  # the worker saw epoch 2 too


def test_bad_indices_and_gt_less_caches(synthetic_root, synthetic_cache, tmp_path):
    with pytest.raises(IndexError):
        CloudPatchDataset(synthetic_cache, [10**6])
    test_cache = ingest(synthetic_root / TEST_DIR, tmp_path / "c", progress=False, subset="test")
    with pytest.raises(ValueError, match="no masks"):
        CloudPatchDataset(test_cache, [0])
    with pytest.raises(ValueError, match="at least one"):
        band_stats(synthetic_cache, [])


def test_row_reader_reads_the_rows_of_the_cache_exactly(synthetic_cache):
    from harness.data.dataset import RowReader

    images = np.load(synthetic_cache / "images.npy", mmap_mode="r")
    reader = RowReader(synthetic_cache / "images.npy")
    assert len(reader) == len(images)
    for row in (0, len(images) // 2, len(images) - 1):
        np.testing.assert_array_equal(reader[row], images[row])
    with pytest.raises(IndexError, match="outside"):
        reader[len(images)]


def test_epoch_shuffle_carries_the_epoch_to_persistent_workers(synthetic_cache):
    from harness.data.dataset import EpochShuffle

    ds = CloudPatchDataset(synthetic_cache, np.arange(16), augment=True, seed=3)
    sampler = EpochShuffle(len(ds), torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=1, persistent_workers=True)
    expected_order = torch.Generator().manual_seed(0)
    seen = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)  # the dataset's own epoch stays 0: a persistent worker would keep that one
        images = torch.cat([b[0] for b in loader])
        order = torch.randperm(16, generator=expected_order).tolist()
        assert torch.equal(images, torch.stack([ds[(epoch, i)][0] for i in order]))
        seen.append(images)
    assert ds.epoch == 0 and not torch.equal(seen[0], seen[1])
    assert [ds.symmetry(i, 1) for i in range(16)] != [ds.symmetry(i, 2) for i in range(16)]
