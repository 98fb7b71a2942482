"""cloud95's wall time projected from measured per-image throughput (used by ``scale.py``).

Device-hours of the sweep (ASHA's expected epochs per architecture) and of the final comparison
(retrains over the seeds, then the test split and every patch of the test scenes), and wall hours for
1, 2, 4 and 8 devices. The rates come from ``scale.py``'s CPU measurement or ``gpu_throughput.py``'s JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

#: 95-Cloud (docs/data.md): 34,701 training patches from 75 scenes, 21,502 of them non-empty.
CLOUD95_PATCHES, CLOUD95_NONEMPTY = 34_701, 21_502
DEVICE_COUNTS = (1, 2, 4, 8)


def asha_epochs(trials: int, max_t: int, grace: int, factor: int) -> float:
    """Expected epochs of an ASHA sweep: of the trials reaching a rung, 1/factor go on (Ray's rungs)."""
    total, alive, done, rung = 0.0, float(trials), 0, grace
    while rung < max_t:
        total += alive * (rung - done)
        done, alive, rung = rung, alive / factor, rung * factor
    return total + alive * (max_t - done)


def project(benchmark: Path, rates: dict, device: str) -> dict:
    """Device-hours and wall hours of a benchmark's sweep and final comparison on 95-Cloud.

    Every trial is taken at depth 4 / base 32 (the largest network of the search spaces, so an upper
    bound), one trial per device at a time; the devices work in parallel up to ``search.max_concurrent``
    (the sweep) and the number of retrains (the comparison). Scheduling and start-up (seconds per
    trial, section 1) are left out: they are negligible against epochs of 13k patches.
    """
    from harness.config.benchmark import load_benchmark

    bench = load_benchmark(benchmark)
    base = CLOUD95_NONEMPTY if bench.split.nonempty_only else CLOUD95_PATCHES
    f_train, f_val, f_test = bench.split.fractions
    train, val, test = base * f_train, base * f_val, base * f_test
    scene_patches = CLOUD95_PATCHES * f_test  # every patch of the test scenes is predicted for stitching
    epochs, trials = bench.train.epochs, bench.search.num_samples
    asha = bench.asha
    sweep_epochs = (
        asha_epochs(trials, epochs, asha.grace_period, asha.reduction_factor) if asha.enabled else trials * epochs
    )
    out: dict = {
        "device": device,
        "assumes": {"train": train, "val": val, "test": test, "scene_patches": scene_patches},
    }
    out["assumes"].update({"sweep_epochs_per_arch": sweep_epochs, "epochs": epochs, "seeds": len(bench.compare.seeds)})
    sweep_s, retrain_s = 0.0, {}
    for arch in bench.architectures:
        r = rates[arch]
        epoch_s = train / r["train_images_per_second"] + val / r["eval_images_per_second"]
        sweep_s += sweep_epochs * epoch_s
        retrain_s[arch] = epochs * epoch_s + (test + scene_patches) / r["eval_images_per_second"]
        out.setdefault("epoch_hours", {})[arch] = epoch_s / 3600
    retrains = len(bench.architectures) * len(bench.compare.seeds)
    out["sweep_device_hours"] = sweep_s / 3600
    out["compare_device_hours"] = len(bench.compare.seeds) * sum(retrain_s.values()) / 3600
    # Architectures are swept one after the other; ASHA keeps up to max_concurrent trials running. The
    # comparison's retrains run at once, in waves of n; each wave is taken as long as the longest retrain.
    out["wall_hours_by_devices"] = {
        n: {
            "sweep": sweep_s / min(n, bench.search.max_concurrent) / 3600,
            "compare": math.ceil(retrains / n) * max(retrain_s.values()) / 3600,
        }
        for n in DEVICE_COUNTS
    }
    for row in out["wall_hours_by_devices"].values():
        row["total"] = row["sweep"] + row["compare"]
    return out


def rates_from_gpu_json(path: Path, batch: int = 16) -> dict:
    """U-Net/UNet++ (base 32, not compiled) training images/s from gpu_throughput.py's JSON.

    gpu_throughput.py times training steps only; evaluation is taken as 3x the training rate (a forward
    pass is about a third of a training step's FLOPs): an assumption, labelled as such in the output.
    """
    payload = json.loads(path.read_text())
    runs = [r for r in payload.get("runs", []) if r.get("base_channels") == 32 and not r.get("compiled")]
    rates = {}
    for arch in ("unet", "unetpp"):
        mine = sorted(
            (r for r in runs if r["arch"] == arch and "images_per_second" in r), key=lambda r: abs(r["batch"] - batch)
        )
        if mine:
            ips = mine[0]["images_per_second"]
            rates[arch] = {"train_images_per_second": ips, "eval_images_per_second": 3 * ips, "eval_assumed": True}
    return {"device": f"{payload.get('device')} (eval rate assumed 3x train)", "rates": rates}
