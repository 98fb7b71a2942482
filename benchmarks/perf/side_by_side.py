"""Architectures one after another or side by side (``search.parallel_architectures``): which is faster.

The smoke benchmark (2 architectures x 4 trials of 4 epochs, 32 px) swept through the CLI
(``cloudmask sweep``, its own private Ray instance of ``ray.num_cpus`` = 2 CPUs, 1 CPU per trial) in three
set-ups, in alternating order so that drift in the machine's load hits all alike:

* ``sequential, 1 at a time``: ``search.max_concurrent`` = 1, ``parallel_architectures`` = 1: one CPU of two idle;
* ``side by side, 1 at a time``: the same, ``parallel_architectures`` = 2: each architecture's driver fills one;
* ``sequential, 2 at a time``: ``max_concurrent`` = 2, ``parallel_architectures`` = 1, the other way to fill
  the devices, which changes the search (TPE sees fewer finished trials before it proposes).

Wall time of the whole command (start-up and data check included) and the ratio to the first set-up.

    python benchmarks/perf/side_by_side.py --quick --json benchmarks/perf/results/side_by_side.json
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import perfutil

CACHE = perfutil.DATA_ROOT / "side-by-side" / "cache"

SETUPS = {
    "sequential, 1 at a time": {"search.max_concurrent": 1, "search.parallel_architectures": 1},
    "side by side, 1 at a time": {"search.max_concurrent": 1, "search.parallel_architectures": 2},
    "sequential, 2 at a time": {"search.max_concurrent": 2, "search.parallel_architectures": 1},
}


def sweep_seconds(overrides: dict, folder: Path) -> float:
    """Wall seconds of one ``cloudmask sweep`` of the smoke benchmark with ``overrides``."""
    sets = {
        **overrides,
        "storage": str(folder / "storage"),
        "tracking.uri": f"sqlite:///{folder / 'mlflow.db'}",
        "data.cache_dir": str(CACHE),
        "ray.num_cpus": 2,
        "resources.cpu": 1,
    }
    cmd = [sys.executable, "-m", "harness.sweep", str(perfutil.SMOKE), "-q"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=perfutil.REPO)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    """Time each set-up ``--repeats`` times, alternating; print and write the medians and ratios."""
    p = perfutil.parser(__doc__)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    repeats = 1 if args.quick else args.repeats
    started = time.perf_counter()
    from harness.config import load_benchmark
    from harness.data.prepare import prepare_data

    # The smoke benchmark's own data, prepared once outside the timings (each sweep then only checks it).
    prepare_data(**load_benchmark(perfutil.SMOKE, [f"data.cache_dir={CACHE}"]).prepare_args())
    times: dict[str, list[float]] = {name: [] for name in SETUPS}
    for _ in range(repeats):
        for name, overrides in SETUPS.items():
            with tempfile.TemporaryDirectory() as tmp:
                times[name].append(round(sweep_seconds(overrides, Path(tmp)), 1))
                print(f"{name}: {times[name][-1]} s", file=sys.stderr, flush=True)
    base = statistics.median(times["sequential, 1 at a time"])
    results = {
        name: {"seconds": values, "median_s": statistics.median(values), "ratio": statistics.median(values) / base}
        for name, values in times.items()
    }
    perfutil.finish(args, {"setups": results}, started)


if __name__ == "__main__":
    main()
