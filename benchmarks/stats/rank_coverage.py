"""Coverage of the K-way ranking's intervals (issue 19), measured by simulation.

Each simulated dataset is a final comparison of K architectures over S paired seeds and N test images,
per-image IoU

    y[x, s, i] = mu[x] + image[i] + image_x[i, x] + seed[s, x] + noise[s, i, x]

(sd: image 0.10, image_x 0.03, seed 0.02, noise 0.08). The estimand is the headline's, this test set and
new training seeds: theta[x] = mu[x] + mean_i image_x[i, x], and image_x is centred per architecture so
that theta = mu exactly, ties included. With ties an architecture's true rank is a set: every rank from
1 + #{theta greater} to #{theta greater or equal}. Measured, with the harness's own code
(:mod:`harness.stats.ranking`):

* ``rank_coverage``: the share of datasets in which *every* architecture's rank interval contains its
  whole true rank set (simultaneous coverage; an interval that orders two tied architectures fails);
* ``holm_familywise_error``: the share in which some architecture is declared distinguishable from the
  sample best although its theta is at least the best's (a false or wrong-way claim);
* ``best_in_best_set``: the share in which every architecture of the highest theta is in the best set.

    python benchmarks/stats/rank_coverage.py           # 2,000 datasets per cell (RESULTS.md)
    python benchmarks/stats/rank_coverage.py --quick   # 300 per cell
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness.stats.ranking import best_set, compare_with_best, rank_intervals  # noqa: E402

SD = {"image": 0.10, "image_x": 0.03, "seed": 0.02, "noise": 0.08}
#: True means per K: ties at the top and in the middle, small and large gaps.
MEANS = {
    3: (0.80, 0.80, 0.75),
    5: (0.80, 0.80, 0.79, 0.77, 0.70),
    10: (0.80, 0.80, 0.795, 0.79, 0.78, 0.78, 0.77, 0.75, 0.72, 0.70),
}


def true_rank_sets(means) -> list[tuple[int, int]]:
    """Per architecture the (lowest, highest) rank it truly holds: ties span their block."""
    mu = np.asarray(means)
    return [(1 + int((mu > m).sum()), int((mu >= m).sum())) for m in mu]


def simulate(*, means, n_seeds: int, n_images: int = 30, reps: int = 2000, seed: int = 0, alpha: float = 0.05):
    """Measured rank coverage, Holm familywise error and best-in-best-set rate over ``reps`` datasets."""
    rng = np.random.default_rng(seed)
    mu = np.asarray(means, float)
    k = mu.size
    truth = true_rank_sets(mu)
    names = [f"arch{x}" for x in range(k)]
    covered = fwe = best_kept = 0
    for _ in range(reps):
        image = rng.normal(0, SD["image"], n_images)
        image_x = rng.normal(0, SD["image_x"], (k, n_images))
        image_x -= image_x.mean(axis=1, keepdims=True)  # theta = mu exactly
        seed_x = rng.normal(0, SD["seed"], (k, n_seeds))
        noise = rng.normal(0, SD["noise"], (k, n_seeds, n_images))
        y = mu[:, None, None] + image[None, None, :] + image_x[:, None, :] + seed_x[:, :, None] + noise
        scores = {names[x]: y[x] for x in range(k)}
        intervals = rank_intervals(scores, alpha=alpha)
        covered += all(
            intervals[names[x]][0] <= truth[x][0] and intervals[names[x]][1] >= truth[x][1] for x in range(k)
        )
        rows = compare_with_best(scores, alpha=alpha)
        best = names.index(rows[0]["best"]) if rows else 0
        fwe += any(r["distinguishable"] and mu[names.index(r["arch"])] >= mu[best] for r in rows)
        kept = set(best_set(scores, alpha=alpha))
        best_kept += all(names[x] in kept for x in range(k) if mu[x] == mu.max())
    return {
        "rank_coverage": covered / reps,
        "holm_familywise_error": fwe / reps,
        "best_in_best_set": best_kept / reps,
    }


def main(argv=None) -> None:
    """Print the table of RESULTS.md: one row per (K, seeds)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 datasets per cell instead of 2,000")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    reps = 300 if args.quick else 2000
    started = time.monotonic()
    print(f"{reps} datasets per cell, 30 test images, alpha 0.05 (target: coverage >= 0.95, FWE <= 0.05)")
    print("| K | seeds | rank coverage | Holm familywise error | true best in best set |")
    print("|---|---|---|---|---|")
    for k, means in MEANS.items():
        for n_seeds in (3, 5, 10):
            r = simulate(means=means, n_seeds=n_seeds, reps=reps, seed=args.seed + 1000 * k + n_seeds)
            print(
                f"| {k} | {n_seeds} | {r['rank_coverage']:.3f} | {r['holm_familywise_error']:.3f} "
                f"| {r['best_in_best_set']:.3f} |",
                flush=True,
            )
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
