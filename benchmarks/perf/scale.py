"""Scale: memory at two data sizes, ingest, loader and model throughput at 384 px, cloud95's projected time.

Synthetic 384-px scenes (4 x 4 patches each) are written in the real 38-Cloud layout
(``write_synthetic_dataset`` via ``prepare_data``: scene split 0.5/0.25/0.25, non-empty patches) at two
sizes, 1x and 4x the scenes (8 and 32 with ``--quick``, 16 and 64 without), and measured:

- ``trial_uss_growth_ratio``: unique memory (USS, ``psutil``) of a running trial (``harness.training.loop.fit``,
  U-Net depth 2 / base 4, batches of 1, ``num_workers=0``, in a child process), the largest reading at
  the end of an epoch, at 4x over 1x (the 1x trial runs as many steps as the 4x one). USS counts the
  cache's memory-mapped pages that no other process maps (page cache: clean, dropped under memory
  pressure), so it is split into those, anonymous memory (``trial_anon_growth_ratio``) and library pages.
- ``compare_peak_rss_growth_ratio``: peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss`` of a child process) of
  ``harness.compare.retrain.retrain_and_score`` (1 epoch, then the test split and every test scene), 4x over 1x;
  also its peak anonymous (heap) and file-backed RSS, sampled every 20 ms.
- ``ingest_to_raw_read_ratio_384``: ingest MB/s over a plain read of the same files (both from the page
  cache) of a tree of 4 hard-linked copies of the 4x tree (2048 patches with ``--quick``), decoding in
  worker processes (the default from ``PROCESS_MIN_PATCHES`` on) and in threads (the harness before).
- loader images/s at 384 px (``make_loader``, augmentation, batch 8) for ``num_workers`` 0, 1, 2 against
  what the model consumes (``train_one_epoch``, U-Net depth 4 / base 32, on this device).
- the projected wall time of ``benchmarks/cloud95.yaml`` from measured per-image train and eval
  throughput of U-Net and UNet++ (depth 4, base 32) on this device, and per device count
  (``--gpu-json``: also from ``gpu_throughput.py``'s figures).

    python benchmarks/perf/scale.py --quick --json benchmarks/perf/results/scale.json

The first run also writes the synthetic data (reused afterwards; ~4 min here with ``--quick``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import perfutil
from projection import project, rates_from_gpu_json

PATCH, GRID = 384, (4, 4)
SCENES = {True: (8, 32), False: (16, 64)}  # --quick: (1x, 4x) scenes
#: The memory children's network: small, so that data, not activations, would show any growth. Batches
#: of 1 give every run the same batch shapes: each new shape (a last, smaller batch) costs ~100 MB of
#: oneDNN primitives and kernels here, which would read as growth with the data.
SMALL = {"arch": "unet", "depth": 2, "base_channels": 4, "batch_size": 1, "eval_batch_size": 1}


def prepare(scenes: int):
    """The prepared dataset of ``scenes`` 384-px scenes and the root of its synthetic tree."""
    from harness.data.prepare import prepare_data, synthetic_dir

    params = {"scenes": scenes, "patch_size": PATCH, "seed": 0, "test_scenes": 0, "grid": list(GRID)}
    cache_dir = perfutil.DATA_ROOT / f"scale-{PATCH}px-{scenes}x{GRID[0]}x{GRID[1]}"
    data = prepare_data(
        synthetic=params, cache_dir=cache_dir, split_kind="scene", fractions=(0.5, 0.25, 0.25), nonempty_only=True
    )
    return data, synthetic_dir(cache_dir, params)


# ----------------------------------------------------------------------------------- child processes
def _status_kib() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process (KiB) from /proc/self/status."""
    wanted = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in wanted:
            out[key] = int(line.split()[1])
    return out


def memory_now(cache_dir: str) -> dict[str, float]:
    """USS and RSS of this process (MB); USS split into the cache's mapped pages, anonymous memory and the
    rest (library pages no other process maps at the moment: this machine's other jobs change it)."""
    import psutil

    proc = psutil.Process()
    uss = proc.memory_full_info().uss
    cache = sum(m.private_clean + m.private_dirty for m in proc.memory_maps() if m.path.startswith(cache_dir))
    status = _status_kib()
    anon = status["RssAnon"] * 1024
    return {
        "uss_mb": uss / 1e6,
        "uss_cache_pages_mb": cache / 1e6,
        "uss_anon_mb": anon / 1e6,
        "uss_libraries_mb": (uss - cache - anon) / 1e6,
        "rss_mb": status["VmRSS"] * 1024 / 1e6,
    }


def child_trial(args: dict) -> dict:
    """A trial as the sweep runs it (``fit``), with USS read at the end of every epoch."""
    from harness.config import TrainConfig
    from harness.data.prepare import PreparedData
    from harness.training.loop import fit

    data = PreparedData(**args["data"])
    config = TrainConfig(**SMALL, epochs=args["epochs"], lr=1e-3, num_workers=0, device="cpu")
    epochs = []
    fit(config, data, lambda metrics, _ckpt: epochs.append({"epoch": metrics["epoch"], **memory_now(data.cache_dir)}))
    peak = max(epochs, key=lambda e: e["uss_mb"])
    return {
        "train_patches": len(data.indices("train")),
        "val_patches": len(data.indices("val")),
        **peak,
        "epochs": epochs,
    }


def child_compare(args: dict) -> dict:
    """One final retrain (1 epoch) and its scoring; peak RSS, peak anonymous and file-backed RSS."""
    from harness.compare.retrain import retrain_and_score
    from harness.config import TrainConfig
    from harness.data.layout import find_scene_gts
    from harness.data.prepare import PreparedData

    data = PreparedData(**args["data"])
    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            status = _status_kib()
            for key in peaks:
                peaks[key] = max(peaks[key], status[key])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    config = TrainConfig(**SMALL, epochs=1, lr=1e-3, num_workers=0, device="cpu")
    gts = {k: str(v) for k, v in find_scene_gts(args["source_root"]).items()}
    result = retrain_and_score(config, data, {}, [], gts)
    done.set()
    sampler.join()
    return {
        "test_patches": len(result.test_rows),
        "scenes_scored": len(result.scene_scores),
        "scene_patches_predicted": int(sum(s["patches"] for s in result.scene_scores)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
        "peak_rss_anon_mb": peaks["RssAnon"] * 1024 / 1e6,
        "peak_rss_file_mb": peaks["RssFile"] * 1024 / 1e6,
    }


def in_child(kind: str, data, source_root: Path, epochs: int = 1) -> dict:
    """Run ``child_<kind>`` in a fresh interpreter (its memory is its own) and return its JSON."""
    payload = {"data": dataclasses.asdict(data)}
    payload.update(source_root=str(source_root), epochs=epochs)
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(payload)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {kind} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------- in-process measurements
def replicated_tree(source: Path, copies: int) -> Path:
    """A tree in the 38-Cloud layout holding ``copies`` hard-linked copies of ``source``'s training files.

    Copy k renames each scene ``<id>`` to ``<id>R<k>``: a large tree (what ingest's worker processes are
    for) with the synthetic files' exact bytes, without generating more scenes. No CSVs (optional).
    """
    tree = perfutil.DATA_ROOT / f"scale-ingest-{source.parent.name}-x{copies}" / "38-Cloud_training"
    if tree.is_dir():
        return tree
    tmp = tree.parent.with_name(tree.parent.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in sorted(source.glob("train_*")):
        (tmp / tree.name / folder.name).mkdir(parents=True)
        for f in folder.iterdir():
            for k in range(copies):
                os.link(f, tmp / tree.name / folder.name / f"{f.stem}R{k}{f.suffix}")
    tmp.rename(tree.parent)
    return tree


def ingest_vs_raw(source: Path, rounds: int) -> dict:
    """MB/s of ingest (threads, worker processes, the default) vs a plain read of the same files."""
    import inspect

    from harness.data import cache
    from harness.data.layout import scan_tree

    patches = [pf for pf in scan_tree(source).patches if pf.kind == "train"]
    files = [p for pf in patches for p in pf.paths()]
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    raw = perfutil.raw_read_seconds(files)  # the first pass also warms the page cache for ingest
    work = perfutil.DATA_ROOT / "scale-ingest"
    # The harness before worker processes (run from a copy of it, see RESULTS.md) has threads only.
    modes = ("threads", "processes") if "processes" in inspect.signature(cache.ingest).parameters else ("threads",)
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):  # alternating, so drifting machine speed hits both alike
        for mode in modes:
            shutil.rmtree(work, ignore_errors=True)
            kwargs = {"processes": mode == "processes"} if len(modes) > 1 else {}
            start = time.perf_counter()
            cache.ingest(source, work / "cache", progress=False, **kwargs)
            seconds[mode].append(time.perf_counter() - start)
    shutil.rmtree(work, ignore_errors=True)
    raw_mb_s = megabytes / raw[-1]
    out = {"files": len(files), "patches": len(patches), "megabytes": megabytes, "raw_read_mb_per_second": raw_mb_s}
    for mode, times in seconds.items():
        out[f"ingest_{mode}_seconds"] = times
        out[f"ingest_{mode}_mb_per_second"] = megabytes / min(times)
        out[f"ingest_{mode}_to_raw_read_ratio"] = megabytes / min(times) / raw_mb_s
    threshold = getattr(cache, "PROCESS_MIN_PATCHES", None)
    out["default_mode"] = "processes" if threshold is not None and len(patches) >= threshold else "threads"
    out["process_min_patches"] = threshold
    return out


def loader_rates(data, min_seconds: float) -> dict:
    """Images/s of the training loader over the train split (whole epochs, worker start included)."""
    import torch
    from torch.utils.data import DataLoader

    from harness.data.dataset import CloudPatchDataset
    from harness.training.loop import make_loader

    dataset = CloudPatchDataset(data.cache_dir, data.indices("train"), augment=True, seed=0)
    out = {}
    for workers in (0, 1, 2):
        loader = make_loader(
            dataset, batch_size=8, device=torch.device("cpu"), num_workers=workers, generator=torch.Generator()
        )
        images, seconds = perfutil.loader_epochs_rate(loader, dataset, min_seconds)
        out[f"num_workers_{workers}"] = images / seconds
        if workers:
            # The same loader with its workers started anew every epoch (make_loader before persistent workers).
            reforked = DataLoader(
                dataset,
                batch_size=8,
                sampler=loader.sampler,
                num_workers=workers,
                worker_init_fn=loader.worker_init_fn,
                persistent_workers=False,
            )
            images, seconds = perfutil.loader_epochs_rate(reforked, dataset, min_seconds)
            out[f"num_workers_{workers}_reforked_each_epoch"] = images / seconds
            out[f"num_workers_{workers}_persistent_to_reforked_ratio"] = (
                out[f"num_workers_{workers}"] / out[f"num_workers_{workers}_reforked_each_epoch"]
            )
    return out


def model_rates(data, arch: str, steps: int) -> dict:
    """Train and eval images/s of ``arch`` (depth 4, base 32) at 384 px on the CPU, batches in memory."""
    import torch

    from harness.config import TrainConfig
    from harness.data.dataset import CloudPatchDataset
    from harness.training.loop import evaluate, model_from_config, prepare_model, train_one_epoch
    from harness.training.losses import cross_entropy_loss

    torch.manual_seed(0)
    dataset = CloudPatchDataset(data.cache_dir, data.indices("train")[: 4 * (steps + 1)])
    items = [dataset[i] for i in range(len(dataset))]

    def batches(size: int) -> list:
        return [
            (torch.stack([x for x, _ in items[i : i + size]]), torch.stack([y for _, y in items[i : i + size]]))
            for i in range(0, size * (steps + 1), size)
        ]

    device = torch.device("cpu")
    model = prepare_model(model_from_config(TrainConfig(arch=arch, depth=4, base_channels=32)), device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    train_batches, eval_batches = batches(2), batches(4)
    train_one_epoch(model, train_batches[:1], optimiser, cross_entropy_loss, device)  # warm-up
    train = train_one_epoch(model, train_batches[1:], optimiser, cross_entropy_loss, device)
    evaluate(model, eval_batches[:1], device)
    scored = evaluate(model, eval_batches[1:], device)
    return {
        "train_images_per_second": train["images"] / train["seconds"],
        "eval_images_per_second": scored["images"] / scored["seconds"],
        "train_batch": 2,
        "eval_batch": 4,
        "steps": steps,
    }


# ----------------------------------------------------------------------------------- main
def main() -> None:
    p = perfutil.parser(__doc__)
    p.add_argument(
        "--only",
        choices=["memory", "ingest", "loader", "throughput", "projection"],
        help="one part (loader: the loader's images/s only; projection: --gpu-json's)",
    )
    p.add_argument("--gpu-json", metavar="PATH", help="gpu_throughput.py's JSON: project cloud95 on that GPU too")
    p.add_argument("--child", nargs=2, metavar=("KIND", "ARGS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, payload = args.child
        print(json.dumps({"trial": child_trial, "compare": child_compare}[kind](json.loads(payload))))
        return
    perfutil.quiet_logs()
    started = time.perf_counter()
    results: dict = {"patch": PATCH, "grid": list(GRID), "busy_cores_before": {}}

    def quiet(section: str) -> None:
        results["busy_cores_before"][section] = perfutil.wait_quiet(timeout=10.0 if args.quick else 120.0)

    sizes = {}
    labels = ("1x", "4x") if args.only != "projection" else ()  # a projection needs no data
    for label, scenes in zip(labels, SCENES[args.quick][: len(labels)], strict=True):
        start = time.perf_counter()
        data, root = prepare(scenes)
        sizes[label] = (data, root)
        results.setdefault("data", {})[label] = {
            "scenes": scenes,
            "patches": len(np.load(Path(data.cache_dir) / "images.npy", mmap_mode="r")),
            **{split: len(data.indices(split)) for split in ("train", "val", "test")},
            "prepare_seconds": time.perf_counter() - start,
        }
    if args.only in (None, "memory"):
        memory(results, sizes, args.quick, quiet)
    if args.only in (None, "ingest"):
        big = replicated_tree(sizes["4x"][1] / "38-Cloud_training", copies=4)
        quiet("ingest")
        ingest = results["ingest"] = ingest_vs_raw(big, rounds=2)
        for mode in ("threads", "processes"):
            if f"ingest_{mode}_to_raw_read_ratio" in ingest:
                results[f"ingest_to_raw_read_ratio_384_{mode}"] = ingest[f"ingest_{mode}_to_raw_read_ratio"]
    cloud95 = perfutil.REPO / "benchmarks" / "cloud95.yaml"
    if args.only == "loader":
        quiet("loader")
        results["loader_images_per_second"] = loader_rates(sizes["4x"][0], 3.0 if args.quick else 10.0)
    if args.only in (None, "throughput"):
        data4 = sizes["4x"][0]
        quiet("loader")
        results["loader_images_per_second"] = loader_rates(data4, 3.0 if args.quick else 10.0)
        quiet("model")
        results["model"] = {arch: model_rates(data4, arch, steps=2 if args.quick else 5) for arch in ("unet", "unetpp")}
        unet = results["model"]["unet"]["train_images_per_second"]
        results["loader_to_model_ratio_384"] = {k: v / unet for k, v in results["loader_images_per_second"].items()}
        device = f"CPU ({perfutil.cpu_model()}, {os.cpu_count()} cores)"
        results.setdefault("cloud95_projection", {})["cpu"] = project(cloud95, results["model"], device)
    if args.gpu_json:
        gpu = rates_from_gpu_json(Path(args.gpu_json))
        found = {"unet", "unetpp"} <= set(gpu["rates"])
        projected = project(cloud95, gpu["rates"], gpu["device"]) if found else {"error": f"no runs in {args.gpu_json}"}
        results.setdefault("cloud95_projection", {})["gpu"] = projected
    perfutil.finish(args, results, started)


def memory(results: dict, sizes: dict, quick: bool, quiet) -> None:
    """The trial and comparison children at 1x and 4x, and their growth ratios."""
    epochs = 1 if quick else 2
    train = {label: len(data.indices("train")) for label, (data, _) in sizes.items()}
    # The 1x trial runs as many training steps as the 4x one (more epochs), so that growth with the
    # number of steps (allocator caches, fragmentation) is not read as growth with the data.
    trial_epochs = {"1x": max(epochs, round(epochs * train["4x"] / train["1x"])), "4x": epochs}
    for kind in ("trial", "compare"):
        quiet(kind)
        for label, (data, root) in sizes.items():
            n = trial_epochs[label] if kind == "trial" else 1
            results.setdefault(kind, {})[label] = in_child(kind, data, root, epochs=n)
    trial, compare = results["trial"], results["compare"]
    results["trial_uss_growth_ratio"] = trial["4x"]["uss_mb"] / trial["1x"]["uss_mb"]
    results["trial_anon_growth_ratio"] = trial["4x"]["uss_anon_mb"] / trial["1x"]["uss_anon_mb"]
    results["compare_peak_rss_growth_ratio"] = compare["4x"]["peak_rss_mb"] / compare["1x"]["peak_rss_mb"]
    results["compare_peak_rss_anon_growth_ratio"] = (
        compare["4x"]["peak_rss_anon_mb"] / compare["1x"]["peak_rss_anon_mb"]
    )


if __name__ == "__main__":
    main()
