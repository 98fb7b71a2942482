"""GPU throughput: U-Net and UNet++ (depth 4, 32 and 64 base channels) at 384 x 384, bf16, on CUDA.

For each network and batch size: training images/s (bf16 autocast, channels_last, uint16 batches copied
non-blocking from pinned memory and scaled on the device, Adam, cross-entropy), the step's FLOPs
(``FlopCounterMode``), MFU against a bf16 matmul peak measured in the same run, and the projected time of
the seed study's run: 60 epochs over 21k training patches (training steps only; evaluation adds to it).
``--compile`` also times ``torch.compile``d models.

Without CUDA it prints why and writes ``{"device": "none", ...}`` (exit status 0), so ``run_all.sh``
passes on CPU-only machines; run it on a GPU box for the figures:

    python benchmarks/perf/gpu_throughput.py --json benchmarks/perf/results/gpu_throughput.json
"""

from __future__ import annotations

import time

import perfutil
import torch

PATCH, EPOCHS, PATCHES = 384, 60, 21_000


def measure(arch: str, base: int, batch: int, steps: int, peak: float, compile_model: bool) -> dict:
    """Training images/s, step FLOPs, MFU and the projected study time of one network and batch size."""
    from harness.models import build_model

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(arch, depth=4, base_channels=base).to(device, memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    step_model = torch.compile(model) if compile_model else model
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 30000, (batch, 4, PATCH, PATCH), dtype=torch.int32, generator=gen)
    images = images.to(torch.uint16).pin_memory()
    masks = torch.randint(0, 2, (batch, PATCH, PATCH), generator=gen).pin_memory()

    def step() -> None:
        perfutil.cuda_bf16_step(step_model, optimiser, images, masks, device)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    rate = steps * batch / (time.perf_counter() - start)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        x = images.to(device).float().contiguous(memory_format=torch.channels_last)
        flops = perfutil.training_step_flops(model, x, masks.to(device))
    return {
        "arch": arch,
        "base_channels": base,
        "batch": batch,
        "compiled": compile_model,
        "images_per_second": rate,
        "step_flops": flops,
        "mfu": flops * rate / batch / peak,
        "projected_study_hours": EPOCHS * PATCHES / rate / 3600,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    p = perfutil.parser(__doc__)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    args = p.parse_args()
    started = time.perf_counter()
    if not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device on this machine; nothing measured (run it on a GPU box)")
        perfutil.finish(args, {"device": "none", "reason": "torch.cuda.is_available() is False"}, started)
        return
    peaks = perfutil.matmul_peak(torch.device("cuda"), torch.bfloat16, n=8192)
    batches = (16,) if args.quick else (8, 16, 32)
    steps = 10 if args.quick else 30
    runs = []
    for arch in ("unet", "unetpp"):
        for base in (32, 64):
            for batch in batches:
                for compiled in (False, True) if args.compile else (False,):
                    torch.cuda.reset_peak_memory_stats()
                    try:
                        runs.append(measure(arch, base, batch, steps, peaks["peak"], compiled))
                    except torch.cuda.OutOfMemoryError:
                        runs.append({"arch": arch, "base_channels": base, "batch": batch, "error": "out of memory"})
                    torch.cuda.empty_cache()
    results = {
        "device": torch.cuda.get_device_name(0),
        "bf16_matmul_peak_flops": peaks["peak"],
        "study": {"epochs": EPOCHS, "patches": PATCHES, "patch": PATCH},
        "runs": runs,
    }
    perfutil.finish(args, results, started)


if __name__ == "__main__":
    main()
