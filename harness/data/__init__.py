"""Data layer: the 38-Cloud / 95-Cloud layout, synthetic scenes, the .npy cache, splits, Dataset.

`python -m harness.data {synth,verify,ingest,split,preview}` is the command line (see docs/data.md).
"""

from .cache import Cache, ingest, open_cache, verify
from .layout import (
    BANDS,
    DatasetError,
    PatchFiles,
    PatchId,
    Problem,
    discover_patches,
    parse_patch_filename,
    parse_patch_name,
)
from .prepare import PreparedData, prepare_data
from .splits import make_split, manifest_sha256, read_manifest, write_manifest
from .synth import write_synthetic_dataset

__all__ = [
    "BANDS",
    "Cache",
    "CloudPatchDataset",
    "DatasetError",
    "PatchFiles",
    "PatchId",
    "PreparedData",
    "Problem",
    "band_stats",
    "discover_patches",
    "ingest",
    "make_split",
    "manifest_sha256",
    "open_cache",
    "parse_patch_filename",
    "parse_patch_name",
    "prepare_data",
    "read_manifest",
    "verify",
    "write_manifest",
    "write_synthetic_dataset",
]


def __getattr__(name: str):
    # The Dataset pulls in torch (slow to import); the CLI and the cache do not need it.
    if name in ("CloudPatchDataset", "band_stats"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
