"""Pack a dataset tree into `.npy` memmaps, atomically; verify a tree; open a cache.

A cache folder holds `images.npy` (N, 4, H, W uint16; red, green, blue, nir), `masks.npy` (N, H, W
uint8 0/1), `patches.csv` (name, scene_id, row, col, nonempty; row i describes images[i]),
`row_sha256.npy` (N, 32 uint8: the sha256 of each row's pixels and mask, what a split's data hash is made
of) and `source.json` (format version and a fingerprint of the source files). It is built in a temporary
sibling folder and renamed into place, so the cache path never holds a half-written cache; a cache
whose fingerprint matches the source is reused without decoding anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap

from harness.errors import InputError, MissingInputError

# DEFAULT_WORKERS, PROCESS_MIN_PATCHES and read_patch are re-exported: they were defined here.
from .decode import DEFAULT_PROCESSES as DEFAULT_PROCESSES
from .decode import DEFAULT_WORKERS as DEFAULT_WORKERS
from .decode import PROCESS_MIN_PATCHES as PROCESS_MIN_PATCHES
from .decode import decode_all, patch_shape
from .decode import read_patch as read_patch
from .layout import BANDS, DatasetError, PatchFiles, Problem, scan_tree

FORMAT_VERSION = 2  # 2: row_sha256.npy
IMAGES, MASKS, PATCHES, SOURCE = "images.npy", "masks.npy", "patches.csv", "source.json"
ROW_DIGESTS = "row_sha256.npy"
PATCH_COLUMNS = ["name", "scene_id", "row", "col", "nonempty"]


@dataclass
class Cache:
    """An opened cache: read-only memmaps plus the patch table (row i of `patches` is image i)."""

    cache_dir: Path
    images: np.ndarray  # (N, 4, H, W) uint16 memmap
    masks: np.ndarray | None  # (N, H, W) uint8 0/1 memmap; None for a cache of a test tree
    patches: pd.DataFrame
    patch_size: int
    source: dict
    row_digests: np.ndarray  # (N, 32) uint8: sha256 of each row's image and mask bytes

    def __len__(self) -> int:
        return len(self.patches)


# ----------------------------------------------------------------------------------- fingerprint
def fingerprint(root: Path, patches: Sequence[PatchFiles], subset: str) -> str:
    """sha256 over the sorted relative paths, sizes and mtimes of the patch files (+ format version)."""
    h = hashlib.sha256(f"harness-cache v{FORMAT_VERSION} subset={subset}\n".encode())
    entries = []
    for pf in patches:
        for path in pf.paths():
            st = path.stat()
            entries.append(f"{path.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n")
    for line in sorted(entries):
        h.update(line.encode())
    return h.hexdigest()


def _read_source(cache_dir: Path) -> dict | None:
    """The cache's source.json, or None when `cache_dir` is not a (complete) cache."""
    try:
        return json.loads((cache_dir / SOURCE).read_text())
    except (OSError, ValueError):
        return None


def verify(
    root: str | Path,
    *,
    subset: str | None = None,
    workers: int | None = None,
    processes: bool | None = None,
    progress: bool = False,
) -> list[Problem]:
    """Every problem of the tree under `root` (structure, CSVs, and each file decoded), sorted by path.

    An empty list means every patch is complete and readable. `subset` ("train"/"test") limits the
    decoded patches; structural problems are always reported. `workers`/`processes` as for `ingest`.
    """
    scan = scan_tree(root)
    patches = [p for p in scan.patches if subset is None or p.kind == subset]
    problems = list(scan.problems)
    shape = patch_shape(patches)
    if patches and shape is None:
        problems.append(Problem(Path(root), "no readable patch file to learn the patch size from"))
    elif patches:
        decode_problems, _ = decode_all(
            patches, shape, None, workers=workers, processes=processes, progress=progress, desc="verify"
        )
        problems.extend(decode_problems)
    return sorted(set(problems))


# ----------------------------------------------------------------------------------- ingest
#: Room left free beside a new cache (its patch table and source file, and the file system's own needs).
FREE_SPACE_MARGIN = 64 * 2**20


def cache_bytes(n: int, shape: tuple[int, int], *, has_masks: bool) -> int:
    """Bytes of ``images.npy`` (+ ``masks.npy``) for ``n`` patches of ``shape``: what ingest will write."""
    pixels = n * shape[0] * shape[1]
    return pixels * len(BANDS) * 2 + (pixels if has_masks else 0)


def check_free_space(folder: str | Path, needed: int) -> None:
    """Raise DatasetError naming ``folder`` when its file system has less than ``needed`` bytes (+ margin) free."""
    free = shutil.disk_usage(folder).free
    if free < needed + FREE_SPACE_MARGIN:
        raise DatasetError(
            [Problem(Path(folder), f"needs {(needed + FREE_SPACE_MARGIN) / 1e9:.2f} GB free, has {free / 1e9:.2f} GB")],
            "not enough disk space for the cache",
        )


def ingest(
    root: str | Path,
    cache_dir: str | Path,
    *,
    workers: int | None = None,
    processes: bool | None = None,
    progress: bool = True,
    subset: str = "train",
) -> Path:
    """Pack the `subset` patches of the tree under `root` into a cache at `cache_dir`; return cache_dir.

    `subset="train"` (default) takes training patches (38-Cloud and 95-Cloud trees, merged) and
    requires their ground truth; `subset="test"` takes test-tree patches, which have no ground truth,
    so that cache has no `masks.npy` (this is the explicit opt-in for gt-less data). An existing cache
    with the same source fingerprint is reused at once. Files are decoded by `workers` worker processes
    (`processes=True`; the default from `PROCESS_MIN_PATCHES` patches on) or threads (`processes=False`).
    Raises `DatasetError` listing every problem (nothing is left at `cache_dir` then), FileExistsError
    when `cache_dir` is a non-empty non-cache.
    """
    if subset not in ("train", "test"):
        raise InputError(f"subset must be 'train' or 'test', got {subset!r}")
    root, cache_dir = Path(root), Path(cache_dir)
    scan = scan_tree(root)
    patches = [p for p in scan.patches if p.kind == subset]
    if not patches and scan.patches:
        other = "test" if subset == "train" else "train"
        hint = " (test trees have no ground truth: ingest them with subset='test' / --subset test)"
        raise DatasetError(
            [Problem(root, f"no {subset} patches found, only {other} patches")],
            f"nothing to ingest{hint if subset == 'train' else ''}",
        )
    if not patches:
        raise DatasetError(scan.problems, f"nothing to ingest under {root}")
    shape = patch_shape(patches)
    if shape is None:
        raise DatasetError([*scan.problems, Problem(root, "no readable patch file to learn the patch size from")])
    if scan.problems:
        # Decode everything anyway so the error lists every problem, not just the structural ones.
        found, _ = decode_all(
            patches, shape, None, workers=workers, processes=processes, progress=progress, desc="verify"
        )
        raise DatasetError(sorted(set(scan.problems + found)), f"cannot ingest {root}: the tree has problems")

    if cache_dir.exists() and not cache_dir.is_dir():
        raise FileExistsError(f"cache path {cache_dir} is a file, not a folder")
    fp = fingerprint(root, patches, subset)
    existing = _read_source(cache_dir)
    if existing is not None and existing.get("fingerprint") == fp and (cache_dir / IMAGES).exists():
        return cache_dir
    if existing is None and cache_dir.exists() and any(cache_dir.iterdir()):
        raise FileExistsError(f"{cache_dir} exists and is not a harness cache; refusing to replace it")

    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    # The cache's size is known before a byte is written: a full disk is a message, not a SIGBUS.
    check_free_space(cache_dir.parent, cache_bytes(len(patches), shape, has_masks=subset == "train"))
    tmp = cache_dir.parent / f".{cache_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _build(tmp, root, patches, shape, subset, fp, workers=workers, processes=processes, progress=progress)
        _install(tmp, cache_dir, fp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a successful install tmp no longer exists
    return cache_dir


def _build(
    tmp: Path,
    root: Path,
    patches: list[PatchFiles],
    shape: tuple[int, int],
    subset: str,
    fp: str,
    *,
    workers: int | None,
    processes: bool | None,
    progress: bool,
) -> None:
    n = len(patches)
    has_masks = subset == "train"
    # Sized (sparse) .npy files with their headers; the decoders write rows into them through the page
    # cache, so memory stays bounded however large the dataset.
    images = open_memmap(tmp / IMAGES, mode="w+", dtype=np.uint16, shape=(n, len(BANDS), *shape))
    masks = open_memmap(tmp / MASKS, mode="w+", dtype=np.uint8, shape=(n, *shape)) if has_masks else None
    targets = ((tmp / IMAGES, images.offset), (tmp / MASKS, masks.offset) if masks is not None else None)
    del images, masks  # unmapped: the rows are written with pwrite
    problems, nonempty = decode_all(
        patches, shape, targets, workers=workers, processes=processes, progress=progress, desc="ingest"
    )
    if problems:
        raise DatasetError(sorted(set(problems)), f"cannot ingest {root}: files have problems")

    table = pd.DataFrame(
        {
            "name": [p.name for p in patches],
            "scene_id": [p.patch.scene_id for p in patches],
            "row": [p.patch.row for p in patches],
            "col": [p.patch.col for p in patches],
            "nonempty": nonempty,
        }
    )
    table.to_csv(tmp / PATCHES, index=False, lineterminator="\n")
    np.save(tmp / ROW_DIGESTS, row_digests(tmp / IMAGES, tmp / MASKS if has_masks else None, workers=workers))
    source = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fp,
        "root": str(root.resolve()),
        "subset": subset,
        "n_patches": n,
        "patch_size": [int(shape[0]), int(shape[1])],
        "bands": list(BANDS),
        "has_masks": has_masks,
    }
    # source.json last: its presence marks a complete cache.
    (tmp / SOURCE).write_text(json.dumps(source, indent=2) + "\n")


def row_digests(images_path: Path, masks_path: Path | None, *, workers: int | None = None) -> np.ndarray:
    """(N, 32) uint8: sha256 of each row's image bytes followed by its mask bytes (if any).

    Read back from the written files, so the digests describe what training will read. hashlib releases
    the GIL on large buffers, so threads hash rows in parallel.
    """
    images = np.load(images_path, mmap_mode="r")
    masks = np.load(masks_path, mmap_mode="r") if masks_path is not None else None

    def digest(i: int) -> bytes:
        h = hashlib.sha256(np.ascontiguousarray(images[i]).data)
        if masks is not None:
            h.update(np.ascontiguousarray(masks[i]).data)
        return h.digest()

    with ThreadPoolExecutor(max_workers=workers or DEFAULT_WORKERS) as pool:
        digests = list(pool.map(digest, range(len(images))))
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(images), 32).copy()


def _install(tmp: Path, cache_dir: Path, fp: str) -> None:
    """Rename `tmp` to `cache_dir`, replacing a stale cache; losing a race to an identical cache is fine."""
    for _ in range(10):
        try:
            os.rename(tmp, cache_dir)  # atomic; also replaces an empty directory on POSIX
            return
        except OSError:
            if not cache_dir.exists():
                raise
        current = _read_source(cache_dir)
        if current is not None and current.get("fingerprint") == fp:
            return  # another process installed the same cache first; ours is discarded
        if current is None and any(cache_dir.iterdir()):
            raise FileExistsError(f"{cache_dir} exists and is not a harness cache; refusing to replace it")
        # A stale cache (or an empty folder): move it aside, then retry the rename.
        trash = cache_dir.parent / f".{cache_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(cache_dir, trash)
        except FileNotFoundError:
            continue  # someone else moved it
        shutil.rmtree(trash, ignore_errors=True)
    raise RuntimeError(f"could not install cache at {cache_dir}: it kept changing under us")


# ----------------------------------------------------------------------------------- reading
def open_cache(cache_dir: str | Path) -> Cache:
    """Open a cache read-only (memmaps: nothing is loaded until indexed)."""
    cache_dir = Path(cache_dir)
    source = _read_source(cache_dir)
    if source is None:
        raise MissingInputError(f"not a harness cache (no readable {SOURCE}): {cache_dir}")
    if source.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            [Problem(cache_dir / SOURCE, f"cache format {source.get('format_version')}, need {FORMAT_VERSION}")],
            "cache is from another version of the harness; ingest again",
        )
    images = np.load(cache_dir / IMAGES, mmap_mode="r")
    masks = np.load(cache_dir / MASKS, mmap_mode="r") if source.get("has_masks", True) else None
    patches = pd.read_csv(
        cache_dir / PATCHES,
        dtype={"name": str, "scene_id": str, "row": np.int64, "col": np.int64, "nonempty": bool},
        keep_default_na=False,
    )
    if list(patches.columns) != PATCH_COLUMNS or len(patches) != len(images):
        raise DatasetError([Problem(cache_dir / PATCHES, "does not match images.npy")], "corrupt cache")
    if masks is not None and masks.shape != (images.shape[0], *images.shape[2:]):
        raise DatasetError([Problem(cache_dir / MASKS, "does not match images.npy")], "corrupt cache")
    try:
        digests = np.load(cache_dir / ROW_DIGESTS)
    except (OSError, ValueError) as exc:
        raise DatasetError([Problem(cache_dir / ROW_DIGESTS, f"unreadable: {exc}")], "corrupt cache") from None
    if digests.shape != (len(images), 32) or digests.dtype != np.uint8:
        raise DatasetError([Problem(cache_dir / ROW_DIGESTS, "does not match images.npy")], "corrupt cache")
    return Cache(cache_dir, images, masks, patches, int(images.shape[-1]), source, digests)
