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
