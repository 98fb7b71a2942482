"""Can this data rank architectures? The networks' test IoU against a per-pixel logistic regression.

A synthetic dataset on which a pixel classifier (brightness and colour, no spatial context) comes close to
the networks cannot tell architectures apart by what they model. This script prepares a benchmark's data,
fits the pixel baseline (:mod:`harness.compare.baseline`) and retrains each architecture once with the
benchmark's training config (``--seeds`` to repeat), all scored on the same test pixels.

    python benchmarks/perf/baseline_gap.py benchmarks/demo.yaml --json runs/baseline_gap.json

Figures: ``benchmarks/perf/RESULTS.md`` ("Can the synthetic data rank architectures?").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

from harness.compare.baseline import pixel_baseline
from harness.compare.retrain import retrain_and_score
from harness.config import load_benchmark
from harness.data.prepare import prepare_data
from harness.metrics import confusion_stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", help="benchmark YAML (its data, split and train sections are used)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a benchmark key")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="training seeds per architecture")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    bench = load_benchmark(args.benchmark, args.set)
    data = prepare_data(**bench.prepare_args(), progress=False)
    started = time.monotonic()
    base = pixel_baseline(data)
    out = {"benchmark": bench.name, "split_hash": data.split_hash, "pixel_baseline_iou": base["iou"], "networks": {}}
    print(f"pixel baseline: IoU {base['iou']:.4f}  F1 {base['f1']:.4f}  ({time.monotonic() - started:.1f} s)")
    for arch in bench.architectures:
        ious = []
        for seed in args.seeds:
            config = dataclasses.replace(bench.trial_config(arch), seed=seed)
            result = retrain_and_score(config, data, bench.prepare_args(), [], {})
            counts = np.asarray(result.per_image_counts, dtype=np.int64).sum(axis=0)
            ious.append(confusion_stats(*(int(c) for c in counts))["iou"])
        gap = float(np.mean(ious)) - base["iou"]
        out["networks"][arch] = {"iou": ious, "gap_over_baseline": gap}
        print(f"{arch}: IoU {np.mean(ious):.4f} over seeds {args.seeds}  (baseline + {gap:.4f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
