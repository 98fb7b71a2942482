"""Random states: captured and restored exactly, loadable with weights_only."""

import random

import numpy as np
import torch

from harness.training.seeding import capture_rng_state, restore_rng_state, seed_everything


def _draws(generator: torch.Generator) -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=generator))


def test_restore_continues_exactly_where_capture_was_taken(tmp_path):
    seed_everything(3)
    generator = torch.Generator().manual_seed(3)
    state = capture_rng_state(generator)
    torch.save(state, tmp_path / "rng.pt")
    first = _draws(generator)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), generator)
    assert _draws(generator) == first


def test_same_seed_same_draws():
    seed_everything(5)
    a = _draws(torch.Generator().manual_seed(5))
    seed_everything(5)
    assert _draws(torch.Generator().manual_seed(5)) == a


def test_capture_opens_no_cuda_context_where_cuda_is_unused(monkeypatch):
    # A CPU trial on a GPU node: CUDA available, never initialised. Reading its RNG states would open a
    # context on every visible GPU; here that read fails the test.
    def opened(*args, **kwargs):
        raise AssertionError("capture_rng_state touched CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", opened)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", opened)
    state = capture_rng_state()
    assert state["cuda"] == []
    restore_rng_state({**state, "cuda": [torch.zeros(16, dtype=torch.uint8)]})  # a GPU checkpoint, CPU resume


def test_cublas_workspace_is_fixed_at_import_unless_the_user_set_it():
    import os
    import subprocess
    import sys

    code = "import os, harness.training.seeding; print(os.environ['CUBLAS_WORKSPACE_CONFIG'])"
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ":4096:8"
    env["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ":16:8"


def test_deterministic_mode_skips_the_fill_of_new_tensors_and_restores_every_setting():
    import torch.utils.deterministic as deterministic

    from harness.training.seeding import deterministic_algorithms

    before = (torch.are_deterministic_algorithms_enabled(), deterministic.fill_uninitialized_memory)
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert deterministic.fill_uninitialized_memory is False
    with deterministic_algorithms(True, fill_uninitialized_memory=True):
        assert deterministic.fill_uninitialized_memory is True
    with deterministic_algorithms(False):
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    assert (torch.are_deterministic_algorithms_enabled(), deterministic.fill_uninitialized_memory) == before
