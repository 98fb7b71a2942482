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


def prepare(patch_size: int, *, scenes: int = 10, grid: tuple[int, int] = (8, 8)):
    """A prepared smoke-like dataset (scene split 0.5/0.25/0.25, non-empty patches) under DATA_ROOT."""
    from harness.data.prepare import prepare_data

    params = synthetic(patch_size, scenes=scenes, grid=grid)
    cache_dir = DATA_ROOT / f"cache-{patch_size}px-{scenes}x{grid[0]}x{grid[1]}"
    return prepare_data(
        synthetic=params,
        cache_dir=cache_dir,
        split_kind="scene",
        fractions=(0.5, 0.25, 0.25),
        split_seed=0,
        nonempty_only=True,
    )


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
