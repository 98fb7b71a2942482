"""What the data hash costs: the per-row sha256 digests ingest writes, against the ingest they are part of.

The cache stores the sha256 of every row's pixels and mask (``row_sha256.npy``) so that ``prepare_data`` can
give a ``data_hash`` covering the pixels as well as the split. The digests are computed once, at ingest,
from the written cache; ``data_hash`` itself only reads the small digest file. Measured in one run, on the
same files: the whole ingest (which includes the digests), the digests alone (page cache warm, as at
ingest), and ``data_hash`` over the manifest.

Figures (JSON): ``ingest_seconds`` (best of ``rounds``), ``digest_seconds`` (best of ``rounds``),
``digest_share_of_ingest`` (digest / ingest), ``digest_mb_per_second``, ``data_hash_seconds``,
``sha256_mb_per_second_one_thread`` (hashlib on one in-memory buffer: the ceiling per thread).

    .venv/bin/python benchmarks/perf/data_hash.py --quick --json benchmarks/perf/results/data_hash.json
"""

from __future__ import annotations

import hashlib
import shutil
import time

import numpy as np
import perfutil
from scale import prepare

from harness.data.cache import IMAGES, MASKS, ingest, open_cache, row_digests
from harness.data.prepare import data_hash
from harness.data.splits import read_manifest


def best_of(rounds: int, fn) -> float:
    """The fastest of ``rounds`` calls of ``fn``, in seconds (the least disturbed by other work)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Measure and print (and with ``--json`` write) the figures."""
    args = perfutil.parser(__doc__).parse_args()
    started = time.perf_counter()
    scenes, rounds = (8, 2) if args.quick else (32, 3)
    data, synthetic_root = prepare(scenes)
    source = synthetic_root / "38-Cloud_training"
    work = perfutil.DATA_ROOT / "data-hash"
    busy = perfutil.busy_cores()

    def fresh_ingest() -> None:
        shutil.rmtree(work, ignore_errors=True)
        ingest(source, work / "cache", progress=False)

    ingest_seconds = best_of(rounds, fresh_ingest)
    cache = open_cache(work / "cache")
    megabytes = (cache.images.nbytes + cache.masks.nbytes) / 1e6
    digest_seconds = best_of(rounds, lambda: row_digests(work / "cache" / IMAGES, work / "cache" / MASKS))
    manifest = read_manifest(data.manifest_path)
    hash_seconds = best_of(rounds, lambda: data_hash(open_cache(data.cache_dir), manifest))
    buffer = np.random.default_rng(0).integers(0, 2**16, size=64 * 2**20 // 2, dtype=np.uint16)
    sha_seconds = best_of(rounds, lambda: hashlib.sha256(buffer.data).digest())
    results = {
        "patches": len(cache),
        "patch_size": cache.patch_size,
        "cache_mb": round(megabytes, 1),
        "manifest_rows": len(manifest),
        "busy_cores_before": busy,
        "ingest_seconds": ingest_seconds,
        "digest_seconds": digest_seconds,
        "digest_share_of_ingest": digest_seconds / ingest_seconds,
        "digest_mb_per_second": megabytes / digest_seconds,
        "data_hash_seconds": hash_seconds,
        "sha256_mb_per_second_one_thread": buffer.nbytes / 1e6 / sha_seconds,
    }
    shutil.rmtree(work, ignore_errors=True)
    perfutil.finish(args, results, started)


if __name__ == "__main__":
    main()
