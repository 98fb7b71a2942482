"""Ray lifecycle and plain Ray tasks: connect or start, check resources, run functions on the cluster.

Used by the sweep driver (:mod:`harness.sweep`) and by the final comparison, which retrains as Ray
tasks so a cluster runs every (architecture, seed) at once. No Tune here.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ray

from harness.config.benchmark import RayConfig
from harness.data.prepare import PreparedData, prepare_data


class ClusterError(RuntimeError):
    """Ray cannot be used as asked (unreachable address, resources no node has, other data on a node)."""


def start_ray(options: RayConfig, address: str | None) -> bool:
    """Connect to ``address`` or start a private local instance; returns True if this call started Ray."""
    if ray.is_initialized():
        return False
    if address is None:
        # "local" always starts a new instance: never attach to a stale cluster left on the machine.
        ray.init(
            address="local",
            num_cpus=options.num_cpus,
            num_gpus=options.num_gpus,
            include_dashboard=False,
            log_to_driver=True,
        )
        return True
    check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=True)
    except Exception as exc:
        raise ClusterError(f"cannot connect to the Ray cluster at --address {address}: {exc}") from None
    return True


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a ``host:port`` (or ``ray://host:port``) address does not answer."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and friends: Ray resolves them itself
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"cannot connect to the Ray cluster at --address {address}: {exc}") from None


@contextlib.contextmanager
def ray_session(options: RayConfig, address: str | None = None) -> Iterator[None]:
    """Keep one Ray connection open across several steps (the demo's sweep and final comparison)."""
    started = start_ray(options, address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def check_resources(cpu: float, gpu: float) -> None:
    """Refuse per-task resources that no alive node can provide (instead of tasks pending forever)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= cpu and n["Resources"].get("GPU", 0) >= gpu]
    if not fits:
        total = ray.cluster_resources()
        raise ClusterError(
            f"resources: each trial asks for cpu={cpu:g}, gpu={gpu:g}, but no node of the Ray cluster has "
            f"that (cluster: {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU on {len(nodes)} "
            "node(s)); lower resources.cpu/resources.gpu or add nodes"
        )


def data_on_node(data: PreparedData, prepare_args: Mapping[str, Any]) -> PreparedData:
    """The prepared data on this node: as given (shared storage) or re-prepared here, same split."""
    if Path(data.cache_dir).is_dir() and Path(data.manifest_path).is_file():
        return data
    local = prepare_data(**prepare_args)
    if local.split_hash != data.split_hash:
        raise ClusterError(
            f"split hash on this node ({local.split_hash[:12]}) differs from the driver's "
            f"({data.split_hash[:12]}): the nodes do not see the same dataset"
        )
    return local


def run_tasks(
    fn: Callable[..., Any],
    kwargs_list: list[dict[str, Any]],
    *,
    cpu: float,
    gpu: float,
    max_retries: int,
    options: RayConfig,
    address: str | None = None,
) -> Iterator[tuple[int, Any]]:
    """Run ``fn(**kwargs)`` for each item as Ray tasks; yield ``(index, result)`` as each finishes.

    The resource request is checked like a sweep's before anything is submitted.
    """
    started = start_ray(options, address)
    try:
        check_resources(cpu, gpu)
        remote = ray.remote(num_cpus=cpu, num_gpus=gpu, max_retries=max_retries)(fn)
        pending = {remote.remote(**kw): i for i, kw in enumerate(kwargs_list)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()
