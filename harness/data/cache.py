"""Pack a dataset tree into `.npy` memmaps, atomically; verify a tree; open a cache.

A cache folder holds `images.npy` (N, 4, H, W uint16; red, green, blue, nir), `masks.npy` (N, H, W
uint8 0/1), `patches.csv` (name, scene_id, row, col, nonempty; row i describes images[i]) and
`source.json` (format version and a fingerprint of the source files). It is built in a temporary
sibling folder and renamed into place, so the cache path never holds a half-written cache; a cache
whose fingerprint matches the source is reused without decoding anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap
from tqdm import tqdm

from .layout import (
    BANDS,
    DatasetError,
    PatchFiles,
    Problem,
    is_nonempty,
    read_tiff,
    scan_tree,
    tiff_shape,
)

FORMAT_VERSION = 1
IMAGES, MASKS, PATCHES, SOURCE = "images.npy", "masks.npy", "patches.csv", "source.json"
PATCH_COLUMNS = ["name", "scene_id", "row", "col", "nonempty"]
#: How many patches' headers are read to decide the dataset's patch size before decoding.
_SHAPE_SAMPLE = 32
#: Patches in flight at once while decoding.
_WINDOW = 2048
#: Decoding threads when the caller does not say. Decoding is mostly tifffile's pure-Python header
#: parsing, which holds the GIL: threads only overlap the file reads, and many of them contend for the
#: GIL (with Python's default of cores + 4 threads, ingest took 1.2-2.4x as long on 2 cores as with 2;
#: benchmarks/perf/RESULTS.md).
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


@dataclass
class Cache:
    """An opened cache: read-only memmaps plus the patch table (row i of `patches` is image i)."""

    cache_dir: Path
    images: np.ndarray  # (N, 4, H, W) uint16 memmap
    masks: np.ndarray | None  # (N, H, W) uint8 0/1 memmap; None for a cache of a test tree
    patches: pd.DataFrame
    patch_size: int
    source: dict

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


# ----------------------------------------------------------------------------------- decoding
def _patch_shape(patches: Sequence[PatchFiles]) -> tuple[int, int] | None:
    """The most common (H, W) among the first patches' headers; files that differ are reported later."""
    shapes: Counter[tuple[int, ...]] = Counter()
    for pf in patches[:_SHAPE_SAMPLE]:
        for path in pf.paths():
            shape = tiff_shape(path)
            if shape is not None and len(shape) == 2:
                shapes[shape] += 1
    if not shapes:
        return None
    best = max(shapes.values())
    h, w = min(s for s, n in shapes.items() if n == best)  # ties: smallest, so the choice is stable
    return h, w


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, ValueError) and text:
        return text  # read_tiff's own messages (dtype, shape, truncated) are already clear
    return f"unreadable ({type(e).__name__}: {text})" if text else f"unreadable ({type(e).__name__})"


def read_patch(pf: PatchFiles, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None, list[Problem]]:
    """Decode and check one patch: (bands (4, H, W) uint16, mask (H, W) uint8 0/1 or None, problems).

    Every file is read even after a failure so that all problems of the patch are reported.
    """
    problems: list[Problem] = []
    image = np.zeros((len(BANDS), *shape), np.uint16)
    for i, band in enumerate(BANDS):
        path = pf.bands.get(band)
        if path is None:
            continue  # scan_tree already reported it as missing
        try:
            image[i] = read_tiff(path, dtype=np.uint16, shape=shape)
        except Exception as e:  # any decoder failure is one "unreadable" problem for this file
            problems.append(Problem(path, _reason(e)))
    mask = None
    if pf.gt is not None:
        try:
            gt = read_tiff(pf.gt, dtype=np.uint8, shape=shape)
            bad = (gt != 0) & (gt != 255)
            if bad.any():
                values = ", ".join(str(v) for v in np.unique(gt[bad])[:5])
                problems.append(Problem(pf.gt, f"ground truth values other than 0/255: {values}"))
            mask = (gt == 255).astype(np.uint8)
        except Exception as e:
            problems.append(Problem(pf.gt, _reason(e)))
    return image, mask, problems


def _decode_all(
    patches: Sequence[PatchFiles],
    shape: tuple[int, int],
    sink: Callable[[int, np.ndarray, np.ndarray | None], None] | None,
    *,
    workers: int | None,
    progress: bool,
    desc: str,
) -> tuple[list[Problem], list[bool]]:
    """Decode every patch in a pool of `workers` threads (default `DEFAULT_WORKERS`), handing rows to `sink`."""
    problems: list[Problem] = []
    nonempty = [False] * len(patches)

    def work(i: int) -> list[Problem]:
        image, mask, probs = read_patch(patches[i], shape)
        if not probs and sink is not None:
            sink(i, image, mask)  # disjoint rows of a memmap: safe from several threads
        nonempty[i] = is_nonempty(image)
        return probs

    with (
        ThreadPoolExecutor(max_workers=workers or DEFAULT_WORKERS) as pool,
        tqdm(total=len(patches), desc=desc, unit="patch", file=sys.stderr, disable=not progress) as bar,
    ):
        # Submit in windows so that 100k-patch trees do not hold 100k futures at once.
        for start in range(0, len(patches), _WINDOW):
            window = range(start, min(start + _WINDOW, len(patches)))
            for fut in as_completed([pool.submit(work, i) for i in window]):
                problems.extend(fut.result())
                bar.update()
    return problems, nonempty


def verify(
    root: str | Path, *, subset: str | None = None, workers: int | None = None, progress: bool = False
) -> list[Problem]:
    """Every problem of the tree under `root` (structure, CSVs, and each file decoded), sorted by path.

    An empty list means every patch is complete and readable. `subset` ("train"/"test") limits the
    decoded patches; structural problems are always reported.
    """
    scan = scan_tree(root)
    patches = [p for p in scan.patches if subset is None or p.kind == subset]
    problems = list(scan.problems)
    shape = _patch_shape(patches)
    if patches and shape is None:
        problems.append(Problem(Path(root), "no readable patch file to learn the patch size from"))
    elif patches:
        decode_problems, _ = _decode_all(patches, shape, None, workers=workers, progress=progress, desc="verify")
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
    progress: bool = True,
    subset: str = "train",
) -> Path:
    """Pack the `subset` patches of the tree under `root` into a cache at `cache_dir`; return cache_dir.

    `subset="train"` (default) takes training patches (38-Cloud and 95-Cloud trees, merged) and
    requires their ground truth; `subset="test"` takes test-tree patches, which have no ground truth,
    so that cache has no `masks.npy` (this is the explicit opt-in for gt-less data). An existing cache
    with the same source fingerprint is reused at once. Raises `DatasetError` listing every problem
    (nothing is left at `cache_dir` then), FileExistsError when `cache_dir` is a non-empty non-cache.
    """
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
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
    shape = _patch_shape(patches)
    if shape is None:
        raise DatasetError([*scan.problems, Problem(root, "no readable patch file to learn the patch size from")])
    if scan.problems:
        # Decode everything anyway so the error lists every problem, not just the structural ones.
        found, _ = _decode_all(patches, shape, None, workers=workers, progress=progress, desc="verify")
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
        _build(tmp, root, patches, shape, subset, fp, workers=workers, progress=progress)
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
    progress: bool,
) -> None:
    n = len(patches)
    has_masks = subset == "train"
    # open_memmap writes through the page cache: memory stays bounded however large the dataset.
    images = open_memmap(tmp / IMAGES, mode="w+", dtype=np.uint16, shape=(n, len(BANDS), *shape))
    masks = open_memmap(tmp / MASKS, mode="w+", dtype=np.uint8, shape=(n, *shape)) if has_masks else None

    def sink(i: int, image: np.ndarray, mask: np.ndarray | None) -> None:
        images[i] = image
        if masks is not None:
            masks[i] = mask

    problems, nonempty = _decode_all(patches, shape, sink, workers=workers, progress=progress, desc="ingest")
    if problems:
        raise DatasetError(sorted(set(problems)), f"cannot ingest {root}: files have problems")
    images.flush()  # the memmaps are closed when this function returns, before the rename
    if masks is not None:
        masks.flush()

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
        raise FileNotFoundError(f"not a harness cache (no readable {SOURCE}): {cache_dir}")
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
    return Cache(cache_dir, images, masks, patches, int(images.shape[-1]), source)
