"""Seeded train/val/test splits of a patch table, and the split manifest with its sha256.

Splits must be identical on every machine, so nothing here depends on Python's `hash()` or on set
order: names and scene ids are sorted, then permuted with `numpy.random.default_rng(seed)`, and split
sizes come from integer largest-remainder rounding.
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import InputError

SPLITS: tuple[str, ...] = ("train", "val", "test")
KINDS: tuple[str, ...] = ("scene", "random")
MANIFEST_COLUMNS = ["name", "split"]


def check_fractions(fractions: Sequence[float] | Mapping[str, float]) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions (a sequence or a mapping by split name); ValueError if bad."""
    if isinstance(fractions, Mapping):
        unknown = sorted(set(fractions) - set(SPLITS))
        if unknown:
            raise InputError(f"fractions: unknown split name(s) {unknown}; expected {list(SPLITS)}")
        values = [fractions.get(s, 0.0) for s in SPLITS]
    else:
        values = list(fractions)
        if len(values) != len(SPLITS):
            raise InputError(f"fractions must have 3 values (train, val, test), got {len(values)}: {values}")
    out = []
    for i, (split, v) in enumerate(zip(SPLITS, values, strict=True)):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InputError(f"fractions[{i}] ({split}) must be a number, got {v!r}") from None
        if not math.isfinite(f) or f < 0 or f > 1:
            raise InputError(f"fractions[{i}] ({split}) must be in [0, 1], got {v!r}")
        out.append(f)
    if not math.isclose(sum(out), 1.0, abs_tol=1e-6):
        raise InputError(
            f"fractions must sum to 1, got {sum(out):g} ("
            + ", ".join(f"{s}={f:g}" for s, f in zip(SPLITS, out, strict=True))
            + ")"
        )
    return out[0], out[1], out[2]


def allocate(n: int, fractions: Sequence[float], *, unit: str = "patches") -> list[int]:
    """Split `n` items into counts per fraction.

    Largest-remainder rounding, then at least one item for every non-zero fraction (taken from the
    largest split). ValueError when there are too few items.
    """
    wanted = sum(1 for f in fractions if f > 0)
    if n < wanted:
        raise InputError(
            f"cannot split {n} {unit} into {wanted} non-empty splits (fractions "
            + ", ".join(f"{f:g}" for f in fractions)
            + f"); need at least {wanted} {unit}"
        )
    exact = [f * n for f in fractions]
    counts = [math.floor(x) for x in exact]
    # Ties broken by split order so the result never depends on float noise beyond the comparison.
    order = sorted(range(len(fractions)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
            counts[donor] -= 1
            counts[i] += 1
    return counts


def make_split(
    patches_df: pd.DataFrame,
    *,
    kind: str = "scene",
    fractions: Sequence[float] | Mapping[str, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    nonempty_only: bool = False,
) -> pd.DataFrame:
    """Assign each patch to train/val/test; returns DataFrame[name, split] sorted by name.

    `kind="scene"` (default) keeps every scene in one split (no leakage between neighbouring patches);
    `kind="random"` splits patches independently (the 38-Cloud study's 60/20/20). `nonempty_only`
    drops patches whose `nonempty` column is false before splitting.
    """
    if kind not in KINDS:
        raise InputError(f"split kind must be one of {list(KINDS)}, got {kind!r}")
    fr = check_fractions(fractions)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"split seed must be a non-negative integer, got {seed!r}")
    if "name" not in patches_df.columns:
        raise InputError("patches table has no 'name' column")
    df = patches_df
    if nonempty_only:
        if "nonempty" not in df.columns:
            raise InputError("nonempty_only=True needs a 'nonempty' column in the patches table")
        df = df[df["nonempty"].astype(bool)]
    if len(df) == 0:
        raise InputError("no patches to split" + (" (none is non-empty)" if nonempty_only else ""))
    names = df["name"].astype(str).to_numpy()
    if len(np.unique(names)) != len(names):
        raise InputError("patches table has duplicate names")

    rng = np.random.default_rng(seed)
    if kind == "random":
        units = np.sort(names)
        unit_of = dict(zip(units, units, strict=True))
        what = "patches"
    else:
        if "scene_id" in df.columns:
            scenes = df["scene_id"].astype(str).to_numpy()
        else:  # derive from the names so a bare name list can be split by scene too
            from .layout import parse_patch_name

            scenes = np.array([parse_patch_name(n).scene_id for n in names])
        units = np.unique(scenes)  # sorted
        unit_of = dict(zip(names, scenes, strict=True))
        what = "scenes"
    order = units[rng.permutation(len(units))]
    counts = allocate(len(units), fr, unit=what)
    bounds = np.cumsum([0, *counts])
    split_of_unit = {}
    for s, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
        for u in order[lo:hi]:
            split_of_unit[u] = s
    sorted_names = np.sort(names)
    return pd.DataFrame({"name": sorted_names, "split": [split_of_unit[unit_of[n]] for n in sorted_names]}).reset_index(
        drop=True
    )


def _canonical_bytes(manifest_df: pd.DataFrame) -> bytes:
    """The manifest as CSV bytes: header `name,split`, rows sorted by name, LF line ends, UTF-8."""
    if list(manifest_df.columns) != MANIFEST_COLUMNS:
        raise InputError(f"manifest columns must be {MANIFEST_COLUMNS}, got {list(manifest_df.columns)}")
    rows = sorted(zip(manifest_df["name"].astype(str), manifest_df["split"].astype(str), strict=True))
    for name, split in rows:
        if split not in SPLITS:
            raise InputError(f"manifest: split of {name} is {split!r}, expected one of {list(SPLITS)}")
        if any(c in name for c in ',"\n\r'):
            raise InputError(f"manifest: name {name!r} has a character CSV would quote")
    return ("name,split\n" + "".join(f"{n},{s}\n" for n, s in rows)).encode("utf-8")


def manifest_sha256(manifest_df: pd.DataFrame) -> str:
    """Hex sha256 of the manifest's canonical CSV bytes (equal to `sha256sum` of the written file)."""
    return hashlib.sha256(_canonical_bytes(manifest_df)).hexdigest()


def write_manifest(manifest_df: pd.DataFrame, path: str | Path) -> str:
    """Write the manifest (canonical CSV, atomically via a temp file + rename); return its sha256."""
    data = _canonical_bytes(manifest_df)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by `write_manifest`; ValueError when it is not one."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(df.columns) != MANIFEST_COLUMNS:
        raise InputError(f"{path}: manifest columns must be {MANIFEST_COLUMNS}, got {list(df.columns)}")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise InputError(f"{path}: unknown split value(s) {bad}")
    return df
