"""Scheduling: per-trial overhead of a Ray Tune sweep whose trials do (almost) nothing.

The trainable reports once and returns, so the sweep's wall time is scheduling: actor start, the Tune
driver loop, result handling. ``sched_overhead_s_per_trial`` = (wall time of ``Tuner.fit`` - ideal) /
trials, where ideal = ceil(trials / concurrency) x the trainable's own work (``--work-s``, default 0).
Measured on one local Ray instance with 16 logical CPUs (``ray.init(num_cpus=16)``) and on a local
3-node ``ray.cluster_utils.Cluster`` (16 CPUs in all), each with ``reuse_actors`` off (what
``harness.sweep.driver`` does today) and on. ``ray.init`` / cluster start are timed apart (a fixed cost).

On a machine with fewer cores than logical CPUs the figure includes the contention of starting that
many worker processes at once: it is an upper bound for a real 16-core node.

    python benchmarks/perf/scheduling.py --quick --json benchmarks/perf/results/scheduling.json
"""

from __future__ import annotations

import math
import os
import tempfile
import time

import perfutil

CPUS = 16
NODES = (4, 6, 6)  # CPUs per node of the local cluster: head + 2 workers


def trivial(config: dict) -> None:
    """A trial that reports once."""
    from ray import tune

    if config.get("work_s"):
        time.sleep(config["work_s"])
    tune.report({"score": 1.0})


def run_tuner(trials: int, work_s: float, reuse: bool, storage: str) -> dict:
    """Time ``Tuner.fit`` of `trials` trivial trials with 1 CPU each on the connected cluster."""
    import ray
    from ray import tune

    concurrency = int(ray.cluster_resources().get("CPU", 1))
    tuner = tune.Tuner(
        tune.with_resources(trivial, {"cpu": 1}),
        param_space={"work_s": work_s, "i": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(reuse_actors=reuse),
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    assert not grid.errors, grid.errors
    ideal = math.ceil(trials / concurrency) * work_s
    return {
        "trials": trials,
        "concurrency": concurrency,
        "reuse_actors": reuse,
        "wall_s": wall,
        "ideal_s": ideal,
        "sched_overhead_s_per_trial": (wall - ideal) / trials,
    }


def on_local(trials: int, work_s: float, storage: str) -> dict:
    """One local instance with CPUS logical CPUs."""
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
    out: dict = {"ray_init_s": time.perf_counter() - start, "runs": []}
    try:
        for reuse in (False, True):
            out["runs"].append(run_tuner(trials, work_s, reuse, storage))
    finally:
        ray.shutdown()
    return out


def on_cluster(trials: int, work_s: float, storage: str) -> dict:
    """A local multi-node cluster (head + workers as separate raylets on this machine)."""
    import ray
    from ray.cluster_utils import Cluster

    start = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": NODES[0], "include_dashboard": False})
    for cpus in NODES[1:]:
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    out: dict = {"cluster_start_s": time.perf_counter() - start, "nodes": len(NODES), "runs": []}
    try:
        for reuse in (False, True):
            out["runs"].append(run_tuner(trials, work_s, reuse, storage))
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


def main() -> None:
    p = perfutil.parser(__doc__)
    p.add_argument("--work-s", type=float, default=0.0, help="seconds each trial sleeps before reporting")
    args = p.parse_args()
    perfutil.quiet_logs()
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    started = time.perf_counter()
    trials = 32 if args.quick else 128
    perfutil.wait_quiet()
    with tempfile.TemporaryDirectory(prefix="perf-sched-") as tmp:
        local = on_local(trials, args.work_s, tmp)
        cluster = on_cluster(trials, args.work_s, tmp)
    results = {
        "sched_overhead_s_per_trial": local["runs"][0]["sched_overhead_s_per_trial"],
        "sched_overhead_s_per_trial_reuse_actors": local["runs"][1]["sched_overhead_s_per_trial"],
        "sched_overhead_s_per_trial_cluster": cluster["runs"][0]["sched_overhead_s_per_trial"],
        "sched_overhead_s_per_trial_cluster_reuse_actors": cluster["runs"][1]["sched_overhead_s_per_trial"],
        "local_16cpu": local,
        "cluster_3node": cluster,
        "work_s": args.work_s,
    }
    perfutil.finish(args, results, started)


if __name__ == "__main__":
    main()
