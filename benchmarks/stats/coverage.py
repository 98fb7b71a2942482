"""Coverage of the final comparison's intervals, measured by simulation (issue 18).

Each simulated dataset is a final comparison: two architectures, S paired training seeds, K test scenes
of 8-24 images each, per-image IoU

    y[x, s, i] = 0.7 + scene[k] + image[i]                      shared by both architectures
               + delta * (x == a)                                the true difference
               + scene_x[k, x] + image_x[i, x]                   architectures rank scenes / images differently
               + seed[s, x] + seed_scene[s, k, x]                 a retrain's luck, overall and per scene
               + noise[s, i, x]

with i in scene k. Variance structures (standard deviations of those terms) are in ``STRUCTURES``.
Two estimands, each interval measured against the one it claims:

* **this test set, new training seeds**: ``theta_T = delta + the image-weighted mean of (scene_x + image_x)``
  of a minus b over *these* test images; what retraining on new seeds and rescoring this test set
  would give on average. P(A > B) for this estimand: on each scene, the probability that a new seed of
  a beats a new seed of b on that scene (normal seed terms: Phi(Delta_k / tau_k)), averaged over scenes.
* **new scenes**: ``delta``, the difference on the population of scenes the test scenes come from.

A null cell has ``delta = 0`` and, for the first estimand, a's scores shifted so that ``theta_T = 0``
exactly (so "excludes 0" is a false positive); a non-null cell has ``delta = 0.02``. Every interval is
the harness's own code (``harness.stats``), except "before", the interval the report printed until
issue 18 (``benchmarks/stats/before.py``, a copy of ``harness/stats/hierarchical.py`` at d8953c8).

    python benchmarks/stats/coverage.py            # 4,000 datasets per cell, 200 bootstrapped (RESULTS.md)
    python benchmarks/stats/coverage.py --quick    # 500 datasets, 100 bootstrapped, 2 structures (~2 min)
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.stats

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import before  # noqa: E402  (the pre-issue-18 interval, frozen)

from harness.stats import hierarchical_paired_bootstrap, paired, probability_of_improvement  # noqa: E402


@dataclass(frozen=True)
class Structure:
    """Standard deviations of the simulation's terms (module docstring)."""

    name: str
    seed: float
    seed_scene: float
    scene_x: float
    image_x: float
    noise: float
    scene: float = 0.05
    image: float = 0.08
    heavy_seeds: bool = False  # seed terms from a t distribution with 3 df (same sd)


STRUCTURES = [
    Structure("seed-dominated", seed=0.02, seed_scene=0.005, scene_x=0.005, image_x=0.01, noise=0.03),
    Structure("scene x arch", seed=0.01, seed_scene=0.005, scene_x=0.03, image_x=0.01, noise=0.03),
    Structure("image-dominated", seed=0.005, seed_scene=0.005, scene_x=0.005, image_x=0.04, noise=0.06),
    Structure("seed x scene", seed=0.01, seed_scene=0.02, scene_x=0.01, image_x=0.01, noise=0.03),
    Structure(
        "heavy-tailed seeds", seed=0.02, seed_scene=0.005, scene_x=0.01, image_x=0.01, noise=0.03, heavy_seeds=True
    ),
]
DELTA = 0.02


def _seed_terms(rng, sd: float, size, heavy: bool) -> np.ndarray:
    if not heavy:
        return rng.normal(0.0, sd, size)
    return rng.standard_t(3, size) * sd / np.sqrt(3.0)  # t3 has variance 3


def simulate(rng, st: Structure, n_seeds: int, n_scenes: int, delta: float):
    """One dataset: ``(a, b, strata, theta_T, gap, tau)`` (module docstring).

    ``gap[k]`` is a's expected lead over b on scene k of this test set and ``tau[k]`` the sd of the
    difference of two new seeds' scores there: P(A > B) for new seeds is ``mean Phi(gap / tau)``.
    """
    sizes = rng.integers(8, 25, n_scenes)
    strata = np.repeat(np.arange(n_scenes), sizes)
    n = strata.size
    shared = 0.7 + rng.normal(0, st.scene, n_scenes)[strata] + rng.normal(0, st.image, n)
    fixed = {x: shared + rng.normal(0, st.scene_x, n_scenes)[strata] + rng.normal(0, st.image_x, n) for x in "ab"}
    fixed["a"] = fixed["a"] + delta
    scores = {}
    for x in "ab":
        seed = _seed_terms(rng, st.seed, (n_seeds, 1), st.heavy_seeds)
        seed_scene = rng.normal(0, st.seed_scene, (n_seeds, n_scenes))[:, strata]
        scores[x] = fixed[x][None, :] + seed + seed_scene + rng.normal(0, st.noise, (n_seeds, n))
    theta = float((fixed["a"] - fixed["b"]).mean())
    gap = np.bincount(strata, fixed["a"] - fixed["b"]) / sizes
    tau = np.sqrt(2 * st.seed**2 + 2 * st.seed_scene**2 + 2 * st.noise**2 / sizes)
    return scores["a"], scores["b"], strata, theta, gap, tau


def p_true(rng, st: Structure, gap: np.ndarray, sizes: np.ndarray, tau: np.ndarray) -> float:
    """P(A > B) on this test set for new seeds: per scene P(new seed of a beats one of b), averaged."""
    if not st.heavy_seeds:
        return float(scipy.stats.norm.cdf(gap / tau).mean())
    draws = 20_000  # t-distributed seed terms: by Monte Carlo
    lead = _seed_terms(rng, st.seed, (draws, 1), True) - _seed_terms(rng, st.seed, (draws, 1), True)
    rest = np.sqrt(2 * st.seed_scene**2 + 2 * st.noise**2 / sizes)
    z = gap[None, :] + lead + rng.normal(0, 1, (draws, gap.size)) * rest[None, :]
    return float((z > 0).mean())


def _covers(low, high, truth) -> bool:
    return bool(np.isfinite(low) and np.isfinite(high) and low <= truth <= high)


METHODS = {
    "diff": "difference, t over seeds (new headline)",
    "p_improve": "P(A > B), Wilson bound (new headline)",
    "new_scenes": "difference, new scenes (random seeds x scenes)",
    "boot_diff": "difference, hierarchical bootstrap spread (fixed resampling)",
    "boot_p": "P(A > B), hierarchical bootstrap spread (fixed resampling)",
    "before_diff": "difference, before (percentile hierarchical bootstrap, d8953c8)",
    "before_p": "P(A > B), before (d8953c8)",
}
BOOTSTRAP_METHODS = ("boot_diff", "boot_p", "before_diff", "before_p")


def run_cell(
    st: Structure, n_seeds: int, n_scenes: int, null: bool, n_data: int, n_boot_data: int, n_boot: int, seed: int
) -> dict:
    """Share of datasets whose interval holds its estimand, per method, in one cell.

    The analytic intervals are measured on ``n_data`` datasets, the bootstrap ones on the first
    ``n_boot_data`` (each costs ``n_boot`` replicates). In a null cell the first estimand's intervals
    see a's scores shifted so that theta_T = 0 and the "new scenes" interval the unshifted data
    (delta = 0); so 1 - coverage there is the rate of falsely excluding 0 (0.5 for P(A > B) only when
    the structure has no architecture interaction).
    """
    rng = np.random.default_rng(seed)
    delta = 0.0 if null else DELTA
    hits = dict.fromkeys(METHODS, 0)
    for d in range(n_data):
        a, b, strata, theta, gap, tau = simulate(rng, st, n_seeds, n_scenes, delta)
        scenes_truth = delta
        if null:  # "no difference on this test set": shift a so that theta_T is exactly 0
            a_t, gap, theta = a - theta, gap - theta, 0.0
        else:
            a_t = a
        groups = paired.scene_groups(strata)
        sizes = np.array([g.size for g in groups])
        truth_p = p_true(rng, st, gap, sizes, tau)
        s = paired.seed_interval(a_t, b)
        hits["diff"] += _covers(s["low"], s["high"], theta)
        p = probability_of_improvement(a_t, b, strata)
        hits["p_improve"] += _covers(*paired.improvement_interval(p, n_seeds), truth_p)
        sc = paired.new_scenes_interval(a, b, groups)
        hits["new_scenes"] += _covers(sc["low"], sc["high"], scenes_truth)
        if d < n_boot_data:
            h = hierarchical_paired_bootstrap(a_t, b, strata, n_boot=n_boot, seed=d)
            hits["boot_diff"] += _covers(h["boot_diff_low"], h["boot_diff_high"], theta)
            hits["boot_p"] += _covers(h["boot_p_improve_low"], h["boot_p_improve_high"], truth_p)
            o = before.hierarchical_paired_bootstrap(a_t, b, strata, n_boot=n_boot, seed=d)
            hits["before_diff"] += _covers(o["diff_ci_low"], o["diff_ci_high"], theta)
            hits["before_p"] += _covers(o["p_improve_ci_low"], o["p_improve_ci_high"], truth_p)
    return {k: v / (n_boot_data if k in BOOTSTRAP_METHODS else n_data) for k, v in hits.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="500 datasets per cell (100 bootstrapped, 300 replicates), 2 structures"
    )
    parser.add_argument("--datasets", type=int, help="datasets per cell for the analytic intervals (default 4000)")
    parser.add_argument("--boot-datasets", type=int, help="datasets per cell for the bootstrap columns (default 200)")
    parser.add_argument("--boot", type=int, help="bootstrap replicates per dataset (default 300)")
    args = parser.parse_args(argv)
    n_data = args.datasets or (500 if args.quick else 4000)
    n_boot_data = min(n_data, args.boot_datasets or (100 if args.quick else 200))
    n_boot = args.boot or 300
    structures = [STRUCTURES[0], STRUCTURES[1]] if args.quick else STRUCTURES
    cols = list(METHODS)
    print("Columns: " + "; ".join(f"`{k}` = {v}" for k, v in METHODS.items()) + ".\n")
    print("| structure | seeds | scenes | null | " + " | ".join(f"`{c}`" for c in cols) + " |")
    print("|---|---|---|---|" + "---|" * len(cols))
    start, worst = time.time(), dict.fromkeys(cols, 1.0)
    for st, s, k, null in itertools.product(structures, (3, 5, 10), (3, 10, 20), (True, False)):
        cell_seed = zlib.crc32(f"{st.name}/{s}/{k}/{null}".encode())
        r = run_cell(st, s, k, null, n_data, n_boot_data, n_boot, seed=cell_seed)
        worst = {c: min(worst[c], r[c]) for c in cols}
        print(
            f"| {st.name} | {s} | {k} | {'yes' if null else 'no'} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |",
            flush=True,
        )
    print("| **lowest** | | | | " + " | ".join(f"**{worst[c]:.3f}**" for c in cols) + " |")
    se = np.sqrt(0.95 * 0.05 / n_data)
    print(
        f"\n{n_data} datasets per cell ({n_boot_data} for the bootstrap columns, {n_boot} replicates each); "
        f"Monte Carlo standard error of a 0.95 coverage: {se:.4f}; {time.time() - start:.0f} s."
    )


if __name__ == "__main__":
    main()
