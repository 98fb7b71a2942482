"""Array helpers every statistic of :mod:`harness.stats` shares (numpy only)."""

from __future__ import annotations

import numpy as np

#: Bootstrap replicates are drawn in chunks of about this many numbers, so that 10,000 replicates of
#: thousands of per-image values do not need gigabytes at once.
CHUNK_ELEMENTS = 2_000_000


def finite(values) -> np.ndarray:
    """1-D float array of ``values`` without NaNs."""
    v = np.asarray(values, dtype=float).ravel()
    return v[~np.isnan(v)]


def win_tie_loss(x: np.ndarray) -> np.ndarray:
    """1 where x > 0, 0.5 where x == 0, 0 where x < 0 (a win, a tie, a loss of a difference ``a - b``)."""
    return (x > 0) + 0.5 * (x == 0)
