"""Shared helpers of the perf scripts: command line, machine description, JSON output, synthetic data.

Every script takes ``--quick`` (small sizes, minutes on a 2-core laptop) and ``--json PATH`` (write the
figures there); the JSON always carries ``machine`` (what the figures were measured on) and ``command``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "benchmarks" / "smoke.yaml"
#: Synthetic data and caches are built once here and reused by every script (prepare_data is idempotent).
DATA_ROOT = Path(os.environ.get("HARNESS_PERF_DIR", Path(tempfile.gettempdir()) / "harness-perf"))


def parser(description: str) -> argparse.ArgumentParser:
    """The common command line: ``--quick`` and ``--json PATH``."""
    p = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (all quick modes: ~10 min on 2 cores)")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    return p


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's best guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, load average, library versions and the accelerator, if any."""
    import torch

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "loadavg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        info["ray"] = None
    return info


def finish(args: argparse.Namespace, results: dict[str, Any], started: float) -> dict[str, Any]:
    """Add machine, command and duration; print the JSON and write it to ``--json`` when given."""
    payload = {
        **results,
        "quick": bool(args.quick),
        "seconds": round(time.perf_counter() - started, 2),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
    }
    text = json.dumps(payload, indent=2, default=float)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return payload


def synthetic(patch_size: int, *, scenes: int = 10, grid: tuple[int, int] = (8, 8)) -> dict[str, Any]:
    """Smoke-like synthetic parameters (smoke.yaml's scenes and grid) at another patch size."""
    return {"scenes": scenes, "patch_size": patch_size, "seed": 0, "test_scenes": 2, "grid": list(grid)}


def cache_dir(patch_size: int, *, scenes: int = 10, grid: tuple[int, int] = (8, 8)) -> Path:
    """Where `prepare` puts the cache of these parameters."""
    return DATA_ROOT / f"cache-{patch_size}px-{scenes}x{grid[0]}x{grid[1]}"


def source_dir(patch_size: int, *, scenes: int = 10, grid: tuple[int, int] = (8, 8)) -> Path:
    """The synthetic tree (38-Cloud layout, TIFF files) behind `prepare`'s cache of these parameters."""
    from harness.data.prepare import synthetic_dir

    params = synthetic(patch_size, scenes=scenes, grid=grid)
    return synthetic_dir(cache_dir(patch_size, scenes=scenes, grid=grid), params) / "38-Cloud_training"


def prepare(patch_size: int, *, scenes: int = 10, grid: tuple[int, int] = (8, 8)):
    """A prepared smoke-like dataset (scene split 0.5/0.25/0.25, non-empty patches) under DATA_ROOT."""
    from harness.data.prepare import prepare_data

    return prepare_data(
        synthetic=synthetic(patch_size, scenes=scenes, grid=grid),
        cache_dir=cache_dir(patch_size, scenes=scenes, grid=grid),
        split_kind="scene",
        fractions=(0.5, 0.25, 0.25),
        split_seed=0,
        nonempty_only=True,
    )


def raw_read_seconds(files: list[Path], passes: int = 2) -> list[float]:
    """Seconds to read every file whole, per pass (the first pass also warms the page cache)."""
    seconds = []
    for _ in range(passes):
        start = time.perf_counter()
        for path in files:
            with open(path, "rb") as fh:
                fh.read()
        seconds.append(time.perf_counter() - start)
    return seconds


def loader_epochs_rate(loader, dataset, min_seconds: float) -> tuple[int, float]:
    """(images, seconds) of whole epochs of ``loader`` for at least ``min_seconds`` (a new epoch's seed each)."""
    images, epoch, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        epoch += 1
        # make_loader's sampler carries the epoch to (persistent) workers; a plain loader has only the dataset's
        getattr(loader.sampler, "set_epoch", dataset.set_epoch)(epoch)
        for batch, _ in loader:
            images += batch.shape[0]
    return images, time.perf_counter() - start


def quiet_logs() -> None:
    """Keep Ray/MLflow/Optuna chatter out of the figures (errors still show)."""
    import logging

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    for name in ("ray", "ray.tune", "mlflow", "optuna", "alembic", "harness"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass


def busy_cores(interval: float = 0.5) -> float:
    """CPU cores busy machine-wide over `interval` seconds (from /proc/stat); NaN where unavailable."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError):
        return float("nan")
    total = total1 - total0
    return (total - (idle1 - idle0)) / total * (os.cpu_count() or 1) if total else float("nan")


def wait_quiet(max_busy: float = 0.3, timeout: float = 120.0) -> float:
    """Wait (up to `timeout` s) until other processes use at most `max_busy` cores; return the last reading.

    This machine may be shared: a measurement taken while another job runs says nothing about the harness.
    """
    deadline = time.monotonic() + timeout
    busy = busy_cores()
    while busy > max_busy and time.monotonic() < deadline:
        time.sleep(2.0)
        busy = busy_cores()
    if busy > max_busy:
        print(f"warning: {busy:.2f} cores busy with other work; figures may be low", file=sys.stderr)
    return busy


def training_step_flops(model, images, masks) -> int:
    """FLOPs of one training step (forward + backward) counted by ``torch.utils.flop_counter``.

    Convolutions and matmuls are counted (what FlopCounterMode knows); element-wise ops are not, so this
    slightly undercounts, as MFU figures conventionally do.
    """
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(images).float(), masks).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def matmul_peak(device, dtype, *, n: int, seconds: float = 2.0) -> dict[str, float]:
    """Measured FLOP/s of an n x n matmul on `device` in `dtype` (what MFU is taken against).

    ``torch_matmul`` is ``a @ b`` (MKL on x86 CPUs, cuBLAS on CUDA). On CPU the same product is also
    timed as a 1x1 convolution, which oneDNN runs: MKL keeps AMD CPUs on an AVX2 path while oneDNN
    (which runs the networks' convolutions) uses AVX-512, so the larger of the two is the ``peak``.
    """
    import torch
    import torch.nn.functional as F

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = {"torch_matmul": 2.0 * n**3 * _rate(lambda: a @ b, device, seconds)}
    if torch.device(device).type == "cpu":
        side = round((n / 4) ** 0.5)  # (4, n, side, side) x (n, n, 1, 1): 2 n^2 * 4 side^2 FLOPs
        x = torch.randn(4, n, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(n, n, 1, 1, dtype=dtype)
        with torch.inference_mode():
            out["onednn_1x1_conv"] = 2.0 * n * n * 4 * side * side * _rate(lambda: F.conv2d(x, w), device, seconds)
    out["peak"] = max(out.values())
    return out


def _rate(fn, device, seconds: float) -> float:
    """Calls per second of `fn` (after three warm-up calls), synchronising the device."""
    for _ in range(3):
        fn()
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(4):
            fn()
        sync(device)
        count += 4
    return count / (time.perf_counter() - start)


def sync(device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def cuda_bf16_step(step_model, optimiser, images, masks, device) -> None:
    """One training step as a tuned GPU loop does it: uint16 batch copied non-blocking, scaled on the
    device, channels_last, bf16 autocast (the reference that compute.py and gpu_throughput.py time)."""
    import torch
    import torch.nn.functional as F

    x = images.to(device, non_blocking=True).float().mul_(1.0 / 65535.0)
    x = x.contiguous(memory_format=torch.channels_last)
    y = masks.to(device, non_blocking=True)
    optimiser.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = step_model(x)
    F.cross_entropy(logits.float(), y).backward()
    optimiser.step()
