"""Data path: what the cache + ``CloudPatchDataset`` + DataLoader deliver vs what the model consumes; ingest.

- ``loader_to_model_ratio``: images/s of the training loader (``harness.training.loop.make_loader`` over a
  ``CloudPatchDataset`` with augmentation, batch 8, shuffled, ``num_workers=0``: one process) over the
  images/s one training step of the model consumes (``harness.training.loop.train_one_epoch`` over batches already
  in memory), per model: the smoke model (32 px, base 4, depth 2), the CPU default of these benchmarks
  (64 px, base 16, depth 3) and the GPU-sized one (384 px, base 32, depth 4; on CPU a few steps of batch 2).
- ``ingest_to_raw_read_ratio``: MB/s of ``harness.data.cache.ingest`` (decode + check + pack into a fresh
  cache, default threads; 1, 2 and cores + 4 threads are timed too) over MB/s of a plain sequential read
  of the same TIFF files (both from the page cache: the files were just written or read, so this
  measures the CPU cost of ingesting, not the disk).

    python benchmarks/perf/data_path.py --quick --json benchmarks/perf/results/data_path.json
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import perfutil
import torch

#: name -> (patch px, base channels, depth, scenes, grid, model batch on CPU)
MODELS = {
    "smoke_32px_b4_d2": (32, 4, 2, 10, (8, 8), 8),
    "cpu_default_64px_b16_d3": (64, 16, 3, 30, (8, 8), 8),
    "gpu_sized_384px_b32_d4": (384, 32, 4, 4, (4, 4), 2),
}
BATCH = 8


def loader_rate(data, patch: int, min_seconds: float) -> dict:
    """Images/s of the training loader over every cache row (augmented, shuffled, batch 8, in-process)."""
    from harness.data.cache import open_cache
    from harness.data.dataset import CloudPatchDataset
    from harness.training.loop import make_loader

    rows = np.arange(len(open_cache(data.cache_dir)))  # all rows: enough patches even at 384 px
    dataset = CloudPatchDataset(data.cache_dir, rows, augment=True, seed=0)
    loader = make_loader(dataset, batch_size=BATCH, device=torch.device("cpu"), generator=torch.Generator())
    for _ in loader:  # warm: memmaps opened, pages cached
        pass
    images, seconds = perfutil.loader_epochs_rate(loader, dataset, min_seconds)
    return {"images_per_second": images / seconds, "mb_per_second": images * 4 * patch * patch * 4 / seconds / 1e6}


def model_rate(data, base: int, depth: int, batch: int, steps: int) -> dict:
    """Images/s one training step consumes (harness loop, batches already in memory, one warm-up step)."""
    from harness.config import TrainConfig
    from harness.data.cache import open_cache
    from harness.data.dataset import CloudPatchDataset
    from harness.training.loop import model_from_config, prepare_model, train_one_epoch
    from harness.training.losses import cross_entropy_loss

    torch.manual_seed(0)
    rows = np.arange(len(open_cache(data.cache_dir)))[: batch * (steps + 1)]
    dataset = CloudPatchDataset(data.cache_dir, rows)
    batches = [
        (torch.stack([dataset[i][0] for i in chunk]), torch.stack([dataset[i][1] for i in chunk]))
        for chunk in np.array_split(np.arange(len(rows)), steps + 1)
    ]
    device = torch.device("cpu")
    model = prepare_model(model_from_config(TrainConfig(arch="unet", depth=depth, base_channels=base)), device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_one_epoch(model, batches[:1], optimiser, cross_entropy_loss, device)  # warm-up
    result = train_one_epoch(model, batches[1:], optimiser, cross_entropy_loss, device)
    return {"images_per_second": result["images"] / result["seconds"], "batch": batch, "steps": steps}


def ingest_vs_raw(source: Path, workdir: Path) -> dict:
    """Ingest the synthetic tree `source` into a fresh cache; read the same files raw; compare MB/s."""
    from harness.data.cache import ingest
    from harness.data.layout import scan_tree

    files = [p for pf in scan_tree(source).patches if pf.kind == "train" for p in pf.paths()]
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    raw_seconds = perfutil.raw_read_seconds(files)  # the first pass also warms the page cache for ingest
    start = time.perf_counter()
    ingest(source, workdir / "cache", progress=False)  # the default thread count
    ingest_seconds = time.perf_counter() - start
    by_workers = {}
    for workers in (1, 2, min(32, (os.cpu_count() or 1) + 4)):  # the last: ThreadPoolExecutor's default
        start = time.perf_counter()
        ingest(source, workdir / f"cache-{workers}", progress=False, workers=workers)
        by_workers[f"{workers}_threads"] = megabytes / (time.perf_counter() - start)
    raw = megabytes / raw_seconds[-1]
    return {
        "ingest_mb_per_second_by_threads": by_workers,
        "files": len(files),
        "megabytes": megabytes,
        "raw_read_mb_per_second": raw,
        "ingest_mb_per_second": megabytes / ingest_seconds,
        "ingest_seconds": ingest_seconds,
        "ingest_us_per_file": ingest_seconds / len(files) * 1e6,
        "ingest_to_raw_read_ratio": megabytes / ingest_seconds / raw,
    }


def main() -> None:
    args = perfutil.parser(__doc__).parse_args()
    started = time.perf_counter()
    min_seconds = 3.0 if args.quick else 10.0
    results: dict = {"models": {}, "ingest": {}}
    for name, (patch, base, depth, scenes, grid, batch) in MODELS.items():
        data = perfutil.prepare(patch, scenes=scenes, grid=grid)
        perfutil.wait_quiet()
        loader = loader_rate(data, patch, min_seconds)
        steps = (2 if args.quick else 5) if patch >= 256 else (20 if args.quick else 60)
        model = model_rate(data, base, depth, batch, steps)
        results["models"][name] = {
            "patch": patch,
            "base_channels": base,
            "depth": depth,
            "loader": loader,
            "model": model,
            "loader_to_model_ratio": loader["images_per_second"] / model["images_per_second"],
        }
        if name != "smoke_32px_b4_d2":
            with tempfile.TemporaryDirectory(prefix="perf-ingest-") as tmp:
                perfutil.wait_quiet()
                source = perfutil.source_dir(patch, scenes=scenes, grid=grid)
                results["ingest"][f"{patch}px"] = ingest_vs_raw(source, Path(tmp))
    default = results["models"]["cpu_default_64px_b16_d3"]
    results["loader_to_model_ratio"] = default["loader_to_model_ratio"]
    results["loader_to_model_ratio_gpu_sized_on_cpu"] = results["models"]["gpu_sized_384px_b32_d4"][
        "loader_to_model_ratio"
    ]
    results["loader_images_per_second_384px"] = results["models"]["gpu_sized_384px_b32_d4"]["loader"][
        "images_per_second"
    ]
    results["ingest_to_raw_read_ratio"] = results["ingest"]["384px"]["ingest_to_raw_read_ratio"]
    perfutil.finish(args, results, started)


if __name__ == "__main__":
    main()
