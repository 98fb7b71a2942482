"""Compute: training FLOP/s of the harness's training step over a matmul peak measured in the same run (MFU).

One training step's FLOPs (forward + backward, batch as configured) are counted with
``torch.utils.flop_counter.FlopCounterMode``; the step is timed over in-memory batches with the harness's
own loop (``harness.training.loop.train_one_epoch``: the harness's memory format and autocast), and the peak is a
large square matmul on the same device (on CPU the larger of ``torch.matmul`` and the same product as a
1x1 convolution: see ``perfutil.matmul_peak``). ``mfu`` = step FLOPs x steps/s / peak FLOP/s. Plain fp32 loops
(default and channels_last memory formats) and the harness loop under ``fit``'s default
``deterministic=True`` are timed in the same run, taking turns (``harness_to_plain_ratio``,
``deterministic_to_fast_ratio``).

On CPU: fp32, the CPU default model of these benchmarks (U-Net 64 px, base 16, depth 3, batch 8). On CUDA
(when present): the GPU-sized model (384 px, base 32, depth 4, batch 16), timed twice -- the harness loop
(float32 batches from the Dataset in pinned memory as ``fit``'s loader gives them, ``train.precision``
"auto" -- bf16 autocast where the GPU has it --, channels_last) and a device-side loop (uint16 batches
in pinned memory, non-blocking copies, scaling on the device, bf16, channels_last, ``--compile`` adds
``torch.compile``); the peak is a bf16 matmul.

    python benchmarks/perf/compute.py --quick --json benchmarks/perf/results/compute.json
"""

from __future__ import annotations

import time

import numpy as np
import perfutil
import torch
import torch.nn.functional as F


def batches_from_cache(patch: int, batch: int, count: int, *, scenes: int, grid: tuple[int, int]):
    """`count` (uint16 images, int64 masks) batches read straight from a prepared cache."""
    from harness.data.cache import open_cache

    cache = open_cache(perfutil.prepare(patch, scenes=scenes, grid=grid).cache_dir)
    rows = np.resize(np.arange(len(cache)), batch * count)
    return [
        (torch.from_numpy(np.array(cache.images[r])), torch.from_numpy(np.array(cache.masks[r]).astype(np.int64)))
        for r in rows.reshape(count, batch)
    ]


def harness_loop(
    arch: str, base: int, depth: int, batches, device: torch.device, deterministic: bool = False, filled: bool = False
):
    """A pass of the harness's own loop (``train_one_epoch``: its memory format and autocast); returns seconds.

    ``deterministic`` runs it as ``fit`` does by default (``TrainConfig.deterministic``: deterministic
    algorithms, and on CUDA no cuDNN autotuning); ``filled`` adds torch's default fill of every new tensor
    in deterministic mode, which the harness turns off (``fill_uninitialized_memory``).
    """
    from harness.config import TrainConfig
    from harness.training.loop import autocast_dtype, model_from_config, prepare_model, train_one_epoch
    from harness.training.losses import cross_entropy_loss
    from harness.training.seeding import deterministic_algorithms

    torch.manual_seed(0)
    model = prepare_model(model_from_config(TrainConfig(arch=arch, depth=depth, base_channels=base)), device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    dtype = autocast_dtype(device)  # fit's default precision ("auto") on this device
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    if device.type == "cuda":  # as fit's loader delivers them: pinned, so the copy to the GPU is asynchronous
        batches = [(images.pin_memory(), masks.pin_memory()) for images, masks in batches]

    def run() -> float:
        with deterministic_algorithms(deterministic, fill_uninitialized_memory=filled):
            result = train_one_epoch(model, batches, optimiser, cross_entropy_loss, device, dtype=dtype, scaler=scaler)
            perfutil.sync(device)
        return result["seconds"]

    return run


def plain_loop(arch: str, base: int, depth: int, batches, device: torch.device, channels_last: bool):
    """A pass of a plain fp32 loop (no autocast) in the default or the channels_last memory format."""
    from harness.models import build_model

    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(arch, depth=depth, base_channels=base).to(device, memory_format=memory_format)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = [(x.to(device, memory_format=memory_format), y.to(device)) for x, y in batches]

    def run() -> float:
        start = time.perf_counter()
        for images, masks in batches:
            optimiser.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), masks).backward()
            optimiser.step()
        perfutil.sync(device)
        return time.perf_counter() - start

    return run


def interleaved(loops: dict, rounds: int) -> dict[str, float]:
    """Best pass time of each loop, the loops taking turns so that drifting machine speed hits all alike."""
    for run in loops.values():
        run()  # warm-up
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(rounds):
        for name, run in loops.items():
            best[name] = min(best[name], run())
    return best


def eval_rates(arch: str, base: int, depth: int, patch: int, scenes: int, grid, sizes=(8, 16, 64)) -> dict:
    """Images/s of ``harness.training.loop.evaluate`` over the val split, per eval batch size (best of 3)."""
    from harness.config import TrainConfig
    from harness.data.dataset import CloudPatchDataset
    from harness.training.loop import evaluate, make_loader, model_from_config

    data = perfutil.prepare(patch, scenes=scenes, grid=grid)
    dataset = CloudPatchDataset(data.cache_dir, data.indices("val"))
    model = model_from_config(TrainConfig(arch=arch, depth=depth, base_channels=base))
    device = torch.device("cpu")
    loaders = {size: make_loader(dataset, batch_size=size, device=device) for size in sizes}
    best = interleaved(
        {size: (lambda loader=loader: evaluate(model, loader, device)["seconds"]) for size, loader in loaders.items()},
        3,
    )
    return {f"batch_{size}": len(dataset) / seconds for size, seconds in best.items()}


def device_rate(arch: str, base: int, depth: int, raw_batches, device: torch.device, compile_model: bool) -> dict:
    """Steps/s of a device-side loop: uint16 pinned batches, non-blocking copies, scaling on the GPU, bf16."""
    from harness.models import build_model

    torch.manual_seed(0)
    model = build_model(arch, depth=depth, base_channels=base).to(device, memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    step_model = torch.compile(model) if compile_model else model
    pinned = [(images.pin_memory(), masks.pin_memory()) for images, masks in raw_batches]

    def run(items) -> None:
        for images, masks in items:
            perfutil.cuda_bf16_step(step_model, optimiser, images, masks, device)

    run(pinned[:3])  # warm-up (and compilation)
    perfutil.sync(device)
    start = time.perf_counter()
    run(pinned[3:])
    perfutil.sync(device)
    return {"steps_per_second": (len(pinned) - 3) / (time.perf_counter() - start), "compiled": compile_model}


def main() -> None:
    p = perfutil.parser(__doc__)
    p.add_argument("--compile", action="store_true", help="CUDA: also time the device loop with torch.compile")
    args = p.parse_args()
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        arch, patch, base, depth, batch, scenes, grid = "unet", 384, 32, 4, 16, 4, (4, 4)
        steps = 12 if args.quick else 50
        peaks = perfutil.matmul_peak(device, torch.bfloat16, n=8192)
    else:
        arch, patch, base, depth, batch, scenes, grid = "unet", 64, 16, 3, 8, 30, (8, 8)
        steps = 25 if args.quick else 100
        perfutil.wait_quiet()
        peaks = perfutil.matmul_peak(device, torch.float32, n=1024, seconds=2.0)
    peak = peaks["peak"]
    raw = batches_from_cache(patch, batch, steps, scenes=scenes, grid=grid)
    batches = [(images.float() / 65535.0, masks) for images, masks in raw]
    model = (arch, base, depth, batches, device)
    loops = {
        "harness": harness_loop(*model),
        "harness_deterministic": harness_loop(*model, deterministic=True),
        "harness_deterministic_filled": harness_loop(*model, deterministic=True, filled=True),
        "plain": plain_loop(arch, base, depth, batches, device, channels_last=False),
        "plain_channels_last": plain_loop(arch, base, depth, batches, device, channels_last=True),
    }
    best = interleaved(loops, rounds=3)
    rate = {name: steps / seconds for name, seconds in best.items()}
    images, masks = batches[0]
    flops = perfutil.training_step_flops(_model(arch, base, depth, device), images.to(device), masks.to(device))
    results = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "dtype": _precision(device),
        "model": {"arch": arch, "patch": patch, "base_channels": base, "depth": depth, "batch": batch},
        "step_flops": flops,
        "matmul_peak_flops": peak,
        "matmul_flops": peaks,
        "harness_images_per_second": rate["harness"] * batch,
        "train_flops_per_second": flops * rate["harness"],
        "mfu": flops * rate["harness"] / peak,
        "mfu_vs_torch_matmul": flops * rate["harness"] / peaks["torch_matmul"],
        "plain_images_per_second": rate["plain"] * batch,
        "plain_channels_last_images_per_second": rate["plain_channels_last"] * batch,
        "plain_mfu": flops * rate["plain"] / peak,
        "harness_to_plain_ratio": rate["harness"] / rate["plain"],
        "channels_last_to_plain_ratio": rate["plain_channels_last"] / rate["plain"],
        # fit's default (deterministic=True) vs the fastest kernels: what reproducibility costs
        "deterministic_to_fast_ratio": rate["harness_deterministic"] / rate["harness"],
        # torch's default fill of new tensors in deterministic mode, which fit turns off: its cost
        "filled_to_deterministic_ratio": rate["harness_deterministic_filled"] / rate["harness_deterministic"],
    }
    if cuda:
        for compiled in (False, True) if args.compile else (False,):
            steps_per_second = device_rate(arch, base, depth, raw, device, compiled)["steps_per_second"]
            key = "device_loop_compiled" if compiled else "device_loop"
            results[key] = {"images_per_second": steps_per_second * batch, "mfu": flops * steps_per_second / peak}
    else:
        results["eval_images_per_second"] = eval_rates(arch, base, depth, patch, scenes, grid)
    perfutil.finish(args, results, started)


def _precision(device: torch.device) -> str:
    from harness.training.loop import autocast_dtype, precision_name

    return precision_name(autocast_dtype(device))


def _model(arch: str, base: int, depth: int, device: torch.device):
    from harness.models import build_model

    return build_model(arch, depth=depth, base_channels=base).to(device)


if __name__ == "__main__":
    main()
