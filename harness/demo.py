"""``python -m harness.demo``: synthetic data -> a sweep of both architectures -> the final comparison.

Everything runs offline on a laptop CPU in a few minutes (``benchmarks/demo.yaml``): the synthetic
dataset is written in the real 38-Cloud layout, ingested, split by scene; U-Net and UNet++ each get the
same TPE + ASHA budget; the best configuration of each is retrained over paired seeds and compared on
the shared test split. Each demo run writes a fresh sweep under ``runs/demo/`` and keeps earlier ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.config import load_benchmark
from harness.final_compare import run_compare
from harness.sweep import ray_session, run_sweep

DEMO = Path(__file__).resolve().parents[1] / "benchmarks" / "demo.yaml"


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m harness.demo", description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default=str(DEMO), help="benchmark file (default: benchmarks/demo.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a benchmark key")
    p.add_argument("--address", help="use this Ray cluster (default: a private local instance)")
    args = p.parse_args(argv)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    bench = load_benchmark(args.benchmark, args.set)
    bench.storage = str(Path(bench.storage).with_name(f"{Path(bench.storage).name}-{stamp}"))
    t0 = time.monotonic()
    with ray_session(bench, args.address):
        outcomes = run_sweep(bench)
        for o in outcomes:
            print(f"{o.arch}: {o.n_trials} trials, {o.n_completed} ran every epoch, best val IoU {o.best_val_iou}")
        out = Path(bench.storage).parent / f"final_compare-{stamp}"
        report = run_compare(bench, outcomes[0].sweep_id, out)
    print(f"\nDemo finished in {time.monotonic() - t0:.0f} s.")
    print(f"Report:    {report.resolve()}")
    print(f"Figures:   {(report.parent / 'figures').resolve()}")
    print(f"Browse:    mlflow ui --backend-store-uri {bench.tracking.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
