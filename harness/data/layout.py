"""The 38-Cloud / 95-Cloud layout on disk: patch names, band folders, patch CSVs, reading one TIFF.

Everything here is about *finding* and *checking* files; decoding a whole tree into arrays is
`cache.py`'s job. Problems are collected, never raised one at a time, so that `verify` can list every
problem of a broken tree in one pass.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from harness.errors import InputError, MissingInputError

BANDS: tuple[str, ...] = ("red", "green", "blue", "nir")
#: The Landsat-8 Collection band file of each 38-Cloud band (4 red, 3 green, 2 blue, 5 NIR: ``<ID>_B4.TIF`` ...).
LANDSAT_BANDS: dict[str, str] = {"red": "B4", "green": "B3", "blue": "B2", "nir": "B5"}
#: A Landsat-8 scene's quality band, ``<ID>_<suffix>.TIF``, preferred first: Collection 2's, then Collection 1's.
LANDSAT_QA_SUFFIXES: tuple[str, ...] = ("QA_PIXEL", "BQA")
#: Bit 0 of either quality band (USGS): the pixel is fill, outside the scene's footprint.
LANDSAT_FILL_BIT = 1
GT = "gt"
ALL_BANDS: tuple[str, ...] = (*BANDS, GT)
#: A patch counts as non-empty when at least this fraction of its pixels is inside the footprint.
NONEMPTY_MIN_FRACTION = 0.8
#: How deep below the root band folders are looked for (root/38-Cloud_training/train_red is depth 2).
MAX_SEARCH_DEPTH = 3

_PATCH_RE = re.compile(r"^patch_(\d+)_(\d+)_by_(\d+)_(LC08\w*)$")
_FILE_RE = re.compile(r"^(red|green|blue|nir|gt)_(patch_.+)\.tiff?$", re.IGNORECASE)
_FOLDER_RE = re.compile(r"^(train|test)_(red|green|blue|nir|gt)(_additional_to38cloud)?$", re.IGNORECASE)
_TIFF_SUFFIXES = (".tif", ".tiff")


class DatasetError(InputError):
    """A dataset tree (or cache) has problems; `.problems` lists every one, each with its path."""

    def __init__(self, problems: Iterable[Problem], summary: str = "dataset has problems") -> None:
        self.problems: list[Problem] = list(problems)
        lines = [f"{summary} ({len(self.problems)}):", *(f"  {p}" for p in self.problems)]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with one file (or folder) of a dataset."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, order=True)
class PatchId:
    """Position of a patch in its scene grid; `row`/`col` are 1-based, `k` the running index."""

    k: int
    row: int
    col: int
    scene_id: str

    @property
    def name(self) -> str:
        """The patch id used in CSVs: `patch_<k>_<row>_by_<col>_<SceneID>`."""
        return f"patch_{self.k}_{self.row}_by_{self.col}_{self.scene_id}"

    def filename(self, band: str) -> str:
        """The file name of one band of this patch, e.g. `red_patch_..._T1.TIF`."""
        return f"{band}_{self.name}.TIF"


@dataclass
class PatchFiles:
    """The files of one patch. `gt` is None in a test tree (patch ground truth is withheld)."""

    patch: PatchId
    bands: dict[str, Path] = field(default_factory=dict)
    gt: Path | None = None
    #: "train" or "test": which kind of tree the patch was found in.
    kind: str = "train"

    @property
    def name(self) -> str:
        """The patch id (``patch_<k>_<row>_by_<col>_<SceneID>``)."""
        return self.patch.name

    def paths(self) -> list[Path]:
        """Every file of the patch that exists, bands in `BANDS` order then gt."""
        out = [self.bands[b] for b in BANDS if b in self.bands]
        return [*out, self.gt] if self.gt is not None else out


@dataclass
class TreeScan:
    """What `scan_tree` found: the patches (sorted by name) and every structural problem."""

    root: Path
    patches: list[PatchFiles]
    problems: list[Problem]
    csv_files: list[Path]


def parse_patch_name(name: str) -> PatchId:
    """Parse `patch_<k>_<row>_by_<col>_<SceneID>`; ValueError when it does not look like one."""
    m = _PATCH_RE.match(name)
    if m is None:
        raise InputError(f"not a patch name (patch_<k>_<row>_by_<col>_LC08...): {name!r}")
    k, row, col, scene = m.groups()
    return PatchId(int(k), int(row), int(col), scene)


def parse_patch_filename(filename: str | Path) -> tuple[str, PatchId]:
    """Parse `<band>_patch_<k>_<row>_by_<col>_<SceneID>.TIF` into (band, PatchId); ValueError if not."""
    base = Path(filename).name
    m = _FILE_RE.match(base)
    if m is None:
        raise InputError(f"not a patch file name (<band>_patch_<k>_<row>_by_<col>_LC08....TIF): {base!r}")
    return m.group(1).lower(), parse_patch_name(m.group(2))


def _band_folders(root: Path) -> Iterator[tuple[Path, str, str]]:
    """Yield (folder, kind, band) for every band folder at most MAX_SEARCH_DEPTH below root."""
    frontier = [root]
    for _ in range(MAX_SEARCH_DEPTH + 1):
        nxt = []
        for d in frontier:
            for child in sorted(d.iterdir()):
                if not child.is_dir():
                    continue
                m = _FOLDER_RE.match(child.name)
                if m:
                    yield child, m.group(1).lower(), m.group(2).lower()
                elif not child.name.startswith("."):
                    nxt.append(child)
        frontier = nxt


def find_csvs(folder: Path) -> list[Path]:
    """The patch / scene-id CSVs directly in a tree folder (any case: `...38-Cloud.csv`, `...38-cloud.csv`)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv")


def read_csv_names(path: Path) -> list[str]:
    """The `name` column of a dataset CSV (patch ids, or scene ids in `*_sceneids_*.csv`)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = {(h or "").strip().lower(): h for h in reader.fieldnames or []}
        if "name" not in fields:
            raise InputError(f"{path}: no 'name' column (columns: {reader.fieldnames})")
        key = fields["name"]
        return [row[key].strip() for row in reader if row.get(key) and row[key].strip()]


def scan_tree(root: str | Path) -> TreeScan:
    """Find every patch under `root` and every structural problem (missing files, bad names, CSVs).

    `root` may be a 38-Cloud training or test folder, the 95-Cloud additional folder, a folder holding
    several of those (merged 38 + 95-Cloud), or a folder that directly holds band folders. File contents
    are not read here (see `read_tiff`).
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"dataset root is not a directory: {root}")
    problems: list[Problem] = []
    # (kind, name) -> PatchFiles; the same name in train and test trees are different patches.
    found: dict[tuple[str, str], PatchFiles] = {}
    tree_dirs: set[Path] = set()  # folders holding band folders: their CSVs are checked
    for folder, kind, band in _band_folders(root):
        tree_dirs.add(folder.parent)
        for f in sorted(folder.iterdir()):
            if not f.is_file() or f.suffix.lower() not in _TIFF_SUFFIXES:
                continue  # Thumbs.db, .DS_Store, ...: not ours to judge
            try:
                fband, pid = parse_patch_filename(f.name)
            except ValueError as e:
                problems.append(Problem(f, str(e)))
                continue
            if fband != band:
                problems.append(Problem(f, f"{fband} file in the {band} folder"))
                continue
            pf = found.setdefault((kind, pid.name), PatchFiles(pid, kind=kind))
            previous = pf.gt if band == GT else pf.bands.get(band)
            if previous is not None:
                problems.append(Problem(f, f"duplicate of {previous}"))
                continue
            if band == GT:
                pf.gt = f
            else:
                pf.bands[band] = f

    patches = sorted(found.values(), key=lambda p: (p.name, p.kind))
    for pf in patches:
        for band in BANDS:
            if band not in pf.bands:
                problems.append(Problem(_expected_path(pf, band), "missing"))
        if pf.kind == "train" and pf.gt is None:
            problems.append(Problem(_expected_path(pf, GT), "missing ground truth"))

    csv_files = [c for d in sorted(tree_dirs) for c in find_csvs(d)]
    problems.extend(_check_csvs(csv_files, found))
    if not patches:
        problems.append(Problem(root, "no patches found (expected train_<band>/ or test_<band>/ folders)"))
    return TreeScan(root, patches, sorted(problems), csv_files)


def _expected_path(pf: PatchFiles, band: str) -> Path:
    """Where a missing file of a patch should be, next to its other files (keeps the folder suffix)."""
    some = pf.paths()[0]  # a patch is only known through at least one of its files
    m = _FOLDER_RE.match(some.parent.name)
    suffix = (m.group(3) or "") if m else ""
    return some.parent.parent / f"{pf.kind}_{band}{suffix}" / pf.patch.filename(band)


def _check_csvs(csv_files: list[Path], found: dict[tuple[str, str], PatchFiles]) -> list[Problem]:
    """Names listed in patch CSVs that have no files.

    Primary patch lists must be complete. A `*nonempty*` list may cover scenes of another download
    (95-Cloud's lists all 75 training scenes while its additional folder holds 57), so only names of
    scenes that are present are checked there.
    """
    problems = []
    names = {name for (_, name) in found}
    scenes = {pf.patch.scene_id for pf in found.values()}
    for path in csv_files:
        low = path.name.lower()
        if "sceneid" in low or "patches" not in low:
            continue
        try:
            listed = read_csv_names(path)
        except (ValueError, OSError, UnicodeDecodeError, csv.Error) as e:
            problems.append(Problem(path, f"unreadable CSV: {e}"))
            continue
        partial = "nonempty" in low
        for name in listed:
            if name in names:
                continue
            try:
                scene = parse_patch_name(name).scene_id
            except ValueError:
                problems.append(Problem(path, f"bad patch name {name!r}"))
                continue
            if partial and scene not in scenes:
                continue
            problems.append(Problem(path, f"lists {name} but no files exist for it"))
    return problems


def discover_patches(root: str | Path, *, subset: str | None = None) -> list[PatchFiles]:
    """Every patch under `root` (see `scan_tree`), sorted by name; `subset` "train"/"test" filters.

    Problems are ignored here; use `scan_tree` or `cache.verify` to see them.
    """
    if subset not in (None, "train", "test"):
        raise InputError(f"subset must be None, 'train' or 'test', got {subset!r}")
    patches = scan_tree(root).patches
    return [p for p in patches if subset is None or p.kind == subset]


def read_tiff(path: Path, *, dtype: np.dtype | type, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read one single-band patch TIFF and check it; ValueError (with a reason) when it is not valid.

    Truncation is checked against the strip table first because some truncations decode without error.
    """
    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise ValueError("no image in file")
        page = tif.pages[0]
        size = path.stat().st_size
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)]
        if ends and max(ends) > size:
            raise ValueError(f"truncated: image data ends at byte {max(ends)}, file has {size}")
        arr = page.asarray()
    if arr.ndim != 2:
        raise ValueError(f"expected one band (2-D), got shape {arr.shape}")
    if arr.dtype != np.dtype(dtype):
        raise ValueError(f"dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"shape {arr.shape[0]}x{arr.shape[1]}, expected {shape[0]}x{shape[1]}")
    return arr


def tiff_shape(path: Path) -> tuple[int, ...] | None:
    """The shape stored in a TIFF's first page header without decoding; None when unreadable."""
    try:
        with tifffile.TiffFile(path) as tif:
            return tuple(tif.pages[0].shape)
    except Exception:  # any parse failure means "unknown"; the full read reports the reason
        return None


def nonempty_fraction(bands: np.ndarray) -> float:
    """Fraction of pixels inside the footprint (non-zero in any band) of a (4, H, W) patch."""
    return float(np.any(bands != 0, axis=0).mean())


def is_nonempty(bands: np.ndarray) -> bool:
    """The 38/95-Cloud `*_nonempty.csv` rule: at least 80 % of the pixels are inside the footprint."""
    return nonempty_fraction(bands) >= NONEMPTY_MIN_FRACTION


SCENE_GT_PREFIX = "edited_corrected_gts_"


def find_scene_gts(root: str | Path) -> dict[str, Path]:
    """Scene ground truths (``Entire_scene_gts/edited_corrected_gts_<SceneID>.TIF``) under ``root``, by scene id."""
    root = Path(root)
    if not root.exists():
        return {}
    return {
        p.stem[len(SCENE_GT_PREFIX) :]: p
        for p in sorted(root.rglob(f"Entire_scene_gts/{SCENE_GT_PREFIX}*"))
        if p.suffix.lower() in _TIFF_SUFFIXES
    }
