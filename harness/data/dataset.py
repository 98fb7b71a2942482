"""PyTorch Dataset over a cache: scaled float32 bands, int64 masks, seeded dihedral augmentation.

The dataset holds only the cache path and an index array; the memmaps are opened lazily in whichever
process reads, so pickling it to DataLoader workers copies no pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from harness.errors import InputError

from .cache import IMAGES, MASKS, open_cache
from .normalisation import NORMALISATIONS, SCALE, band_stats

__all__ = ["NORMALISATIONS", "SCALE", "CloudPatchDataset", "RowReader", "band_stats", "dihedral"]


class RowReader:
    """Reads rows of a ``.npy`` array with ``pread``: a copy per row, nothing mapped into the process.

    Indexing a memmap maps the pages it touches into the reader, where they stay and count as the
    process's own memory (USS) until it exits: a trial would seem to grow with the dataset it read
    (benchmarks/perf/RESULTS.md, "Scale"). The kernel's page cache still holds the file for every reader.
    """

    def __init__(self, path: str | Path) -> None:
        """Learn the array's layout from its header; the file stays open for reading."""
        mapped = np.load(path, mmap_mode="r")
        if not mapped.flags.c_contiguous:
            raise ValueError(f"{path}: expected a C-ordered array")
        self.path = str(path)
        self.shape = mapped.shape
        self.dtype = mapped.dtype
        self.offset = mapped.offset
        self.row_bytes = int(np.prod(mapped.shape[1:], dtype=np.int64)) * mapped.dtype.itemsize
        del mapped
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, row: int) -> np.ndarray:
        """Row ``row`` as a new array of shape ``shape[1:]``."""
        if not 0 <= row < self.shape[0]:
            raise IndexError(f"row {row} outside 0..{self.shape[0] - 1} of {self.path}")
        data = os.pread(self._fd, self.row_bytes, self.offset + row * self.row_bytes)
        if len(data) != self.row_bytes:
            raise OSError(f"{self.path}: short read at row {row} (the file is truncated)")
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape[1:])

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


def dihedral(array: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of the square on the last two axes.

    Rotates by k % 4 quarter turns, then flips left-right when k >= 4. Applied to bands (C, H, W) and
    mask (H, W) alike.
    """
    out = np.rot90(array, k % 4, axes=(-2, -1))
    if k >= 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)  # torch.from_numpy needs positive strides


class CloudPatchDataset(Dataset):
    """Patches `indices` of the cache at `cache_dir` as (image float32 (4, H, W), mask int64 (H, W)).

    `normalisation="scale"` divides DN by 65535; `"standardise"` subtracts `band_stats[0]` and divides
    by `band_stats[1]` per band (compute them on the train split with `band_stats`). With `augment`,
    item i of epoch e gets symmetry `k` drawn from `default_rng([seed, e, i])`: the same on every run
    and in every worker, different across epochs. The epoch comes with the index when the loader's
    sampler yields `(epoch, i)` keys (:class:`EpochShuffle`: what persistent DataLoader workers need, as
    they keep the copy of the dataset they started with); a plain `i` uses the epoch of `set_epoch`.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        indices: np.ndarray | list[int],
        *,
        normalisation: str = "scale",
        band_stats: tuple[np.ndarray, np.ndarray] | None = None,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        if normalisation not in NORMALISATIONS:
            raise InputError(f"normalisation must be one of {list(NORMALISATIONS)}, got {normalisation!r}")
        if normalisation == "standardise" and band_stats is None:
            raise InputError("normalisation='standardise' needs band_stats=(mean, std) from the train split")
        self.cache_dir = str(cache_dir)
        self.indices = np.asarray(indices, dtype=np.int64)
        cache = open_cache(cache_dir)  # validates the cache now rather than in a worker later
        if cache.masks is None:
            raise InputError(f"cache {cache_dir} has no masks (it was ingested from a test tree)")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(cache)):
            raise IndexError(f"indices out of range for a cache of {len(cache)} patches")
        self.patch_size = cache.patch_size
        self.normalisation = normalisation
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        if band_stats is not None:
            mean, std = (np.asarray(a, dtype=np.float32).reshape(4, 1, 1) for a in band_stats)
            self._mean, self._inv_std = mean, (1.0 / std).astype(np.float32)
        else:
            self._mean = self._inv_std = None
        self._images: RowReader | None = None
        self._masks: RowReader | None = None

    def __len__(self) -> int:
        return int(self.indices.size)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw for this epoch."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_images"] = state["_masks"] = None  # reopened lazily in the receiving process
        return state

    def _open(self) -> None:
        root = Path(self.cache_dir)
        self._images = RowReader(root / IMAGES)
        self._masks = RowReader(root / MASKS)

    def symmetry(self, i: int, epoch: int | None = None) -> int:
        """The dihedral symmetry (0..7) item i gets in ``epoch`` (default: the current one; 0 without augmentation)."""
        if not self.augment:
            return 0
        epoch = self.epoch if epoch is None else epoch
        return int(np.random.default_rng([self.seed, epoch, int(i)]).integers(8))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        if self._images is None:
            self._open()
        row = int(self.indices[i])
        image = np.asarray(self._images[row], dtype=np.float32)
        if self.normalisation == "scale":
            image *= np.float32(SCALE)
        else:
            image = (image - self._mean) * self._inv_std
        mask = np.asarray(self._masks[row], dtype=np.int64)
        k = self.symmetry(i, epoch)
        if k:
            image, mask = dihedral(image, k), dihedral(mask, k)
        return torch.from_numpy(image), torch.from_numpy(mask)


class EpochShuffle(Sampler):
    """A shuffling sampler whose keys carry the epoch: ``(epoch, i)`` for a :class:`CloudPatchDataset`.

    One ``torch.randperm`` of ``generator`` per epoch and nothing else drawn from it, so the order depends
    only on the generator's state: not on the loader's workers, their persistence, or a resume (the
    generator's state is checkpointed). Call ``set_epoch`` before each epoch; the epoch travels with
    every index, so persistent workers (which keep their own copy of the dataset) augment for the
    right epoch. ``keyed=False`` yields the plain indices instead (a dataset without epochs).
    """

    def __init__(self, size: int, generator: torch.Generator, *, keyed: bool = True) -> None:
        self.size, self.generator, self.keyed, self.epoch = int(size), generator, keyed, 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next pass's keys carry."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        order = torch.randperm(self.size, generator=self.generator).tolist()
        return iter([(self.epoch, i) for i in order] if self.keyed else order)
