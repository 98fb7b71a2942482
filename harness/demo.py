"""``python -m harness.demo``: synthetic data -> a sweep of both architectures -> the final comparison.

Everything runs offline on a laptop CPU in a few minutes (``benchmarks/demo.yaml``): the synthetic
dataset is written in the real 38-Cloud layout, ingested, split by scene; U-Net and UNet++ each get the
same TPE + ASHA budget; the best configuration of each is retrained over paired seeds and compared on
the shared test split. Each demo run writes a fresh sweep under ``runs/demo/`` and keeps earlier ones.
The same as ``cloudmask demo`` (:mod:`harness.cli`).
"""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
