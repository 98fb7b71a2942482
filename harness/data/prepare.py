"""One call from "a dataset (or synthetic parameters)" to "a cache plus a split manifest".

`prepare_data` is what training and sweeps call. It is idempotent and safe when several processes
call it at once on the same paths: synthetic data and the cache are built in temporary folders and
renamed into place (the loser of a race discards its copy), and the manifest is replaced atomically
with identical bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import InputError

from . import synth
from .cache import PATCHES, Cache, ingest, open_cache
from .layout import DatasetError, Problem
from .splits import SPLITS, check_fractions, make_split, manifest_sha256, read_manifest, write_manifest

#: Bump when the generator's output changes, so old synthetic folders are not reused.
SYNTH_VERSION = 2  # 2: hand-drawn-like masks, snow closer to cloud, more thin cloud


@dataclass(frozen=True)
class PreparedData:
    """Where a prepared dataset lives; plain strings so it pickles cheaply to Ray / DataLoader workers.

    ``split_hash`` is the sha256 of the split manifest: which patch is in which split. ``data_hash`` adds
    what is in them: the sha256 over every manifest row's split, name and pixel-and-mask digest, so two
    preparations agree on it only if they train, validate and test on the same bytes.
    """

    cache_dir: str
    manifest_path: str
    split_hash: str
    data_hash: str

    def indices(self, split: str) -> np.ndarray:
        """Cache rows (ascending int64) of the patches in `split` ("train", "val" or "test")."""
        if split not in SPLITS:
            raise InputError(f"split must be one of {list(SPLITS)}, got {split!r}")
        return _split_rows(self.cache_dir, self.manifest_path, self.split_hash)[split].copy()


@functools.lru_cache(maxsize=8)
def _split_rows(cache_dir: str, manifest_path: str, split_hash: str) -> dict[str, np.ndarray]:
    manifest = read_manifest(manifest_path)
    if manifest_sha256(manifest) != split_hash:
        raise DatasetError(
            [Problem(Path(manifest_path), f"sha256 differs from the prepared split {split_hash[:12]}")],
            "split manifest changed since prepare_data",
        )
    # Only the patch table is needed: reading patches.csv avoids mapping the arrays.
    names = pd.read_csv(Path(cache_dir) / PATCHES, usecols=["name"], dtype=str)["name"]
    row_of = pd.Series(np.arange(len(names), dtype=np.int64), index=names.to_numpy())
    missing = manifest.loc[~manifest["name"].isin(row_of.index), "name"]
    if len(missing):
        raise DatasetError(
            [Problem(Path(manifest_path), f"{n} is not in the cache") for n in missing.head(20)],
            f"manifest names missing from {cache_dir}",
        )
    out = {}
    for split in SPLITS:
        rows = row_of.loc[manifest.loc[manifest["split"] == split, "name"]].to_numpy(np.int64)
        out[split] = np.sort(rows)
    return out


def synthetic_params(synthetic: Mapping[str, object]) -> dict[str, object]:
    """`write_synthetic_dataset` arguments with every default filled in (what the folder name hashes)."""
    unknown = sorted(set(synthetic) - set(synth.DEFAULTS))
    if unknown:
        raise InputError(f"synthetic: unknown parameter(s) {unknown}; known: {sorted(synth.DEFAULTS)}")
    params = {**synth.DEFAULTS, **synthetic}
    if params["test_scenes"] is None:
        params["test_scenes"] = int(params["scenes"]) // 3
    params["grid"] = [int(v) for v in params["grid"]]
    return params


def synthetic_dir(cache_dir: str | Path, synthetic: Mapping[str, object]) -> Path:
    """The folder (next to `cache_dir`) a synthetic dataset with these parameters is written to."""
    params = synthetic_params(synthetic)
    key = json.dumps({"version": SYNTH_VERSION, **params}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir).resolve().parent / f"synthetic-{digest}"


def ensure_synthetic(cache_dir: str | Path, synthetic: Mapping[str, object]) -> Path:
    """Write the synthetic dataset once (temp folder + rename; tolerate another process winning)."""
    final = synthetic_dir(cache_dir, synthetic)
    if final.is_dir():
        return final
    params = synthetic_params(synthetic)
    params["grid"] = tuple(params["grid"])
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        synth.write_synthetic_dataset(tmp, **params)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            # Lost the race: an identical dataset is already in place.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def manifest_name(kind: str, fractions: Sequence[float], seed: int, nonempty_only: bool) -> str:
    """File name of the manifest for these split parameters, e.g. `split-scene-0.6-0.2-0.2-seed0.csv`."""
    fr = "-".join(f"{f:g}" for f in fractions)
    return f"split-{kind}-{fr}-seed{seed}{'-nonempty' if nonempty_only else ''}.csv"


def prepare_data(
    *,
    root: str | Path | None = None,
    synthetic: Mapping[str, object] | None = None,
    cache_dir: str | Path,
    split_kind: str = "scene",
    fractions: Sequence[float] | Mapping[str, float] = (0.6, 0.2, 0.2),
    split_seed: int = 0,
    nonempty_only: bool = False,
    progress: bool = False,
) -> PreparedData:
    """Make (or reuse) the cache and the split manifest; return where they are.

    Give exactly one of `root` (a downloaded 38-Cloud / 95-Cloud tree) or `synthetic` (a dict of
    `write_synthetic_dataset` keyword arguments; `{}` means its defaults), written once under
    `cache_dir/../synthetic-<hash of the parameters>`. The training patches are ingested into
    `cache_dir` (reused when the source fingerprint matches) and the manifest is written to
    `cache_dir/split-<kind>-<fractions>-seed<seed>[-nonempty].csv`.
    """
    if (root is None) == (synthetic is None):
        raise InputError("prepare_data needs exactly one of root=... or synthetic={...}")
    fr = check_fractions(fractions)  # fail on bad fractions before any slow work
    cache_dir = Path(cache_dir)
    source = Path(root) if root is not None else ensure_synthetic(cache_dir, synthetic or {})
    ingest(source, cache_dir, progress=progress)

    cache = open_cache(cache_dir)
    manifest = make_split(cache.patches, kind=split_kind, fractions=fr, seed=split_seed, nonempty_only=nonempty_only)
    path = cache_dir / manifest_name(split_kind, fr, split_seed, nonempty_only)
    digest = manifest_sha256(manifest)
    # Rewrite only when needed: readers in other processes never see the file change.
    if not (path.is_file() and _file_sha256(path) == digest):
        write_manifest(manifest, path)
    return PreparedData(str(cache_dir.resolve()), str(path.resolve()), digest, data_hash(cache, manifest))


def data_hash(cache: Cache, manifest: pd.DataFrame) -> str:
    """sha256 over the manifest's rows (in order): split, name and the cache row's pixel digest."""
    row_of = pd.Series(np.arange(len(cache.patches)), index=cache.patches["name"])
    rows = row_of.loc[manifest["name"]].to_numpy(np.int64)
    h = hashlib.sha256(b"harness-data-hash v1\n")
    for split, name, digest in zip(manifest["split"], manifest["name"], cache.row_digests[rows], strict=True):
        h.update(f"{split}\t{name}\t{digest.tobytes().hex()}\n".encode())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
