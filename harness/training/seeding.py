"""Seeds and random states: what makes a CPU run repeat exactly, and a resumed run continue exactly."""

from __future__ import annotations

import os
import random
from contextlib import contextmanager

import numpy as np
import torch
import torch.utils.deterministic

# cuBLAS is deterministic only with a fixed workspace, and reads this variable once, when its handle is
# created: setting it on entering deterministic mode is too late in a process that has already run a
# matmul on the GPU (a reused Ray actor, a second fit in one process). Set here, at import, before any
# training code can touch CUDA; a value the user exported wins. It costs at most 32 MiB of workspace.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive ``random``/numpy seeds from the worker's torch seed.

    The torch seed of a worker comes from the loader's generator, so workers repeat across runs.
    """
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


@contextmanager
def deterministic_algorithms(enabled: bool = True, *, fill_uninitialized_memory: bool = False):
    """Deterministic kernels (warn where none exists) for the duration, then restore the settings.

    ``enabled=False`` lets cuDNN pick the fastest (possibly non-deterministic) kernels instead.
    ``fill_uninitialized_memory``: torch's deterministic mode by default also writes a known value into
    every new ``torch.empty`` tensor, so that code which reads memory it never wrote repeats too. Every
    kernel training runs writes all of its output, so the harness turns that fill off (a pass over every
    new activation and gradient buffer); ``benchmarks/perf/compute.py`` measures what it would cost.
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    torch.utils.deterministic.fill_uninitialized_memory = fill_uninitialized_memory
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]
        torch.utils.deterministic.fill_uninitialized_memory = previous[3]


def capture_rng_state(loader_generator: torch.Generator | None = None) -> dict:
    """Every random state training depends on, as tensors and plain lists (loadable with weights_only)."""
    version, internal, gauss_next = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "name": name,
            "keys": keys.tolist(),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        # Only once CUDA is in use: get_rng_state_all() would otherwise open a context on every visible
        # GPU, also in a CPU trial on a GPU node (Ray 2.60 no longer hides GPUs from such tasks).
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def restore_rng_state(state: dict, loader_generator: torch.Generator | None = None) -> None:
    """Inverse of ``capture_rng_state``."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["name"],
            np.asarray(numpy["keys"], dtype=np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    # A checkpoint from a GPU run resumed on another machine: restore what matches, the rest stays seeded.
    if state["cuda"] and torch.cuda.is_initialized() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])
