"""Throughput and memory of ``cloudmask predict`` on whole scenes: megapixels/s, peak memory, the overlap's cost.

Scenes are Landsat-8 scene folders (four uint16 band GeoTIFFs) made by repeating one synthetic scene
(:func:`harness.data.synth_landsat.write_landsat_scenes`) over the requested size; a full Landsat-8 scene is
about 7,700 x 7,800 px. Each measurement runs ``predict_scene`` in a child process of its own, so its peak
resident memory (``ru_maxrss`` of that child) is its own: the full-size scene against one a quarter of its area
shows the memory is bounded by a strip of tiles, not by the scene. The overlap's cost is the time with
``--overlap`` 64 over the time with 0, measured in the same run. The network is the demo's U-Net (depth 2,
8 base channels) with random weights: speed does not depend on what it learned.

    .venv/bin/python benchmarks/perf/predict.py --quick --json benchmarks/perf/results/predict.json
    (--quick: 3,840 x 3,900 and 1,920 x 1,950 px; without: 7,680 x 7,800 and 3,840 x 3,900)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import perfutil


def write_scene(folder: Path, height: int, width: int) -> Path:
    """A scene folder of ``height`` x ``width`` px: one synthetic scene repeated (its fill border and QA included)."""
    import numpy as np
    import rasterio

    from harness.data.layout import LANDSAT_BANDS
    from harness.data.synth_landsat import write_landsat_scenes

    (seed_scene,) = write_landsat_scenes(folder / "seed", scenes=1, seed=0, patch_size=384)
    scene_id = f"LC08_L1TP_000000_20200101_20200101_01_T1_{height}x{width}"
    out = folder / scene_id
    out.mkdir(parents=True, exist_ok=True)
    for band in (*LANDSAT_BANDS.values(), "QA_PIXEL"):  # the quality band too: predict reads its fill bit
        with rasterio.open(next(seed_scene.glob(f"*_{band}.TIF"))) as src:
            tile, profile = src.read(1), src.profile
        reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]))
        profile |= {"height": height, "width": width}
        with rasterio.open(out / f"{scene_id}_{band}.TIF", "w", **profile) as dst:
            dst.write(np.tile(tile, reps)[:height, :width], 1)
    return out


def child(scene: str, overlap: int) -> None:
    """Mask one scene and print seconds and megapixels as JSON (run in its own process)."""
    import torch

    from harness.config import TrainConfig
    from harness.predict import Preprocessing, find_scene, predict_scene
    from harness.training.loop import model_from_config

    torch.manual_seed(0)
    model = model_from_config(TrainConfig(arch="unet", depth=2, base_channels=8)).eval()
    preprocessing = Preprocessing()
    found = find_scene(scene, preprocessing)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        predict_scene(model, preprocessing, found, out, tile=384, overlap=overlap, progress=False)
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "megapixels": found.height * found.width / 1e6}))


def measure(scene: Path, overlap: int) -> dict:
    """Run :func:`child` in a fresh process; its figures and its peak resident memory in MiB."""
    cmd = [sys.executable, __file__, "--child", str(scene), "--overlap", str(overlap)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{cmd} failed")
    figures = json.loads(out.strip().splitlines()[-1])
    return {
        **figures,
        "megapixels_per_second": figures["megapixels"] / figures["seconds"],
        "peak_mib": usage.ru_maxrss / 1024,
    }


def main() -> None:
    p = perfutil.parser(__doc__)
    p.add_argument("--child", help=argparse.SUPPRESS)  # the measured process: one scene, one overlap
    p.add_argument("--overlap", type=int, default=64, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.overlap)
        return
    started = time.perf_counter()
    full = (3840, 3900) if args.quick else (7680, 7800)
    quarter = (full[0] // 2, full[1] // 2)
    work = perfutil.DATA_ROOT / "predict"
    scenes = {name: write_scene(work / name, *size) for name, size in (("full", full), ("quarter", quarter))}
    runs = {
        "quarter_overlap64": measure(scenes["quarter"], 64),
        "full_overlap64": measure(scenes["full"], 64),
        "full_overlap0": measure(scenes["full"], 0),
    }
    results = {
        "scene_px": {"full": list(full), "quarter": list(quarter)},
        "runs": runs,
        "megapixels_per_second": runs["full_overlap64"]["megapixels_per_second"],
        "peak_full_to_quarter": runs["full_overlap64"]["peak_mib"] / runs["quarter_overlap64"]["peak_mib"],
        "area_full_to_quarter": (full[0] * full[1]) / (quarter[0] * quarter[1]),
        "overlap64_to_overlap0_seconds": runs["full_overlap64"]["seconds"] / runs["full_overlap0"]["seconds"],
    }
    perfutil.finish(args, results, started)


if __name__ == "__main__":
    main()
