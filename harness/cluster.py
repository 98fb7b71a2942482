"""Ray lifecycle and plain Ray tasks: connect or start, check resources, run functions on the cluster.

Used by the sweep driver (:mod:`harness.sweep.driver`) and by the final comparison, which retrains as Ray
tasks so a cluster runs every (architecture, seed) at once. No Tune here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray

from harness.config.benchmark import RayConfig
from harness.console import QUIET, verbosity
from harness.data.prepare import PreparedData, prepare_data
from harness.errors import ClusterError


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
            log_to_driver=verbosity() > QUIET,  # --quiet: the workers' own output stays in their logs
        )
        end_with_this_process()
        return True
    check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=verbosity() > QUIET)
    except Exception as exc:
        raise connection_error(address, exc) from None
    return True


#: The watchdog of a private Ray instance (see end_with_this_process): argv[1] is the driver's pid.
_WATCHDOG = """
import sys, time
import psutil
try:
    driver = psutil.Process(int(sys.argv[1]))
    seen = {}
    while driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE:
        for child in driver.children(recursive=True):
            seen.setdefault(child.pid, child)
        time.sleep(0.2)
except psutil.Error:
    seen = locals().get("seen", {})
for p in list(seen.values()):  # what those still alive started since the last look
    try:
        for child in p.children(recursive=True):
            seen.setdefault(child.pid, child)
    except psutil.Error:
        pass
left = [p for p in seen.values() if p.pid != psutil.Process().pid and p.is_running()]
for p in left:
    try:
        p.terminate()
    except psutil.Error:
        pass
_, alive = psutil.wait_procs(left, timeout=5)
for p in alive:
    try:
        p.kill()
    except psutil.Error:
        pass
"""


_watchdog: subprocess.Popen | None = None


def stop_ray() -> None:
    """Shut down the Ray instance this process started, and its watchdog (nothing is left for it to do)."""
    global _watchdog
    ray.shutdown()
    if _watchdog is not None:
        _watchdog.terminate()
        _watchdog.wait(timeout=10)
        _watchdog = None


def end_with_this_process() -> None:
    """Make the private Ray instance this process started end with it, even when it is SIGKILLed.

    Ray ends the instance's processes at ``ray.shutdown`` (and its GCS and raylet when the driver dies),
    but a SIGKILLed driver leaves the raylet's agents running for ever (two or more processes per kill).
    A small watchdog, in a session of its own so a kill of the driver's process group spares it, notes
    every process the driver has started and ends those still alive once the driver is gone (psutil
    compares start times, so a reused pid is never hit). After a clean shutdown it finds nothing to do.
    """
    global _watchdog
    _watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


#: What Ray's exception chain says when the cluster's token authentication refused the driver.
_AUTH_MARKERS = ("InvalidAuthToken", "AuthenticationError", "UNAUTHENTICATED", "Unauthenticated")
TOKEN_HELP = (
    "Run the driver with RAY_AUTH_MODE=token and the cluster's token, which Ray reads from RAY_AUTH_TOKEN, "
    "else from the file RAY_AUTH_TOKEN_PATH names, else from ~/.ray/auth_token (`ray get-auth-token` on the "
    "head prints it); or submit the driver to the cluster with `ray job submit --working-dir . -- python -m "
    "harness.sweep.driver … --address auto`, which runs it with the cluster's own settings"
)


def token_source() -> str | None:
    """Where Ray would read this process's token from (in Ray's order of precedence), or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}" + ("" if Path(path).is_file() else " (no such file)")
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def connection_error(address: str, exc: BaseException) -> ClusterError:
    """A :class:`ClusterError` for a failed ``ray.init(address=…)`` that names the real cause.

    Ray reports a refused token as "Failed to connect to Ray cluster at …"; the cause is further down
    its exception chain, where :class:`ray.exceptions.AuthenticationError` names it.
    """
    chain: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 5:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    if not any(marker in text for text in chain for marker in _AUTH_MARKERS):
        lines = chain[-1].strip().splitlines()
        detail = f" ({lines[-1]})" if len(chain) > 1 and lines else ""
        return ClusterError(f"cannot connect to the Ray cluster at --address {address}: {chain[0]}{detail}")
    mode = os.environ.get("RAY_AUTH_MODE")
    source = token_source()
    if mode == "token" and source and "no such file" not in source:
        what = f"the cluster uses token authentication and refused this driver's token (from {source}): a mismatch"
    else:
        have = f"RAY_AUTH_MODE={mode}" if mode else "RAY_AUTH_MODE is unset"
        what = (
            "the cluster uses token authentication and this driver has no token for it "
            f"({have}; token: {source or 'none found'})"
        )
    return ClusterError(f"cannot connect to the Ray cluster at --address {address}: {what}. {TOKEN_HELP}")


def _ray_address_file() -> Path:
    """Ray's record of the last cluster ``ray start`` started on this machine (what ``auto`` reads)."""
    tmp = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return Path(tmp or "/tmp") / "ray" / "ray_current_cluster"


def resolve_auto(address: str) -> tuple[str, str]:
    """``(host:port, where it came from)`` for ``auto``, as Ray resolves it: RAY_ADDRESS, then its address file."""
    env = os.environ.get("RAY_ADDRESS")
    if env and env != "auto":
        return env, "RAY_ADDRESS"
    path = _ray_address_file()
    text = path.read_text().strip() if path.is_file() else ""
    if not text:
        raise ClusterError(
            f"--address {address}: no Ray cluster to join (RAY_ADDRESS is unset and {path} does not exist); "
            "start one with `ray start --head`, or pass --address HOST:PORT"
        )
    return text, str(path)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when the cluster address does not answer.

    ``host:port`` and ``ray://host:port`` are tried as given; ``auto`` is first resolved as Ray does, so a
    stale address file (left by a cluster that is gone) is named instead of Ray's minute of retries.
    """
    target, origin = address.removeprefix("ray://"), ""
    if target == "auto":
        target, source = resolve_auto(address)
        origin = f" (resolved to {target} from {source})"
    host, sep, port = target.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # not a host:port: Ray resolves it itself
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        stale = "; that file is stale (its cluster is gone): `ray stop` removes it" if "ray_current" in origin else ""
        raise ClusterError(f"cannot connect to the Ray cluster at --address {address}{origin}: {exc}{stale}") from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return  # a TLS cluster expects a handshake first: the plain-text probe below would misjudge it
    answer = _grpc_answer(host or "127.0.0.1", int(port), timeout)
    if answer is not None:
        # Ray itself would retry this address for ever: something listens there, but it is not Ray.
        raise ClusterError(
            f"cannot connect to the Ray cluster at --address {address}{origin}: something listens there, but not "
            f"Ray's GCS (it {answer}); the head's GCS port is the one `ray start --head --port` was given "
            "(6379 by default); the dashboard (8265) and MLflow (5000) are other services"
        )


#: The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the ray:// client server)
#: answers with a SETTINGS frame of its own; anything else answers otherwise, or not at all.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _grpc_answer(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` answers as a gRPC server does; else what it did, for the message."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_HTTP2_PREFACE)
            reply = conn.recv(64)
    except TimeoutError:
        return f"answered nothing within {timeout:g} s"
    except OSError as exc:
        return f"closed the connection ({exc})"
    if len(reply) >= 4 and reply[3] == 0x04:  # an HTTP/2 frame header whose type is SETTINGS
        return None
    if not reply:
        return "closed the connection without a word"
    first = reply.decode("latin-1").strip().splitlines()[0][:60] if reply.strip() else repr(reply[:20])
    return f"answered {first!r}"


def driver_address() -> str:
    """The address another driver process connects to for the Ray instance this process is connected to."""
    return ray.get_runtime_context().gcs_address


@contextlib.contextmanager
def ray_session(options: RayConfig, address: str | None = None) -> Iterator[None]:
    """Keep one Ray connection open across several steps (the demo's sweep and final comparison)."""
    started = start_ray(options, address)
    try:
        yield
    finally:
        if started:
            stop_ray()


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


def check_loader_workers(
    num_workers: int,
    concurrency: int,
    cpu_per_trial: float,
    gpu_per_trial: float = 0.0,
    *,
    nodes: list[dict[str, Any]] | None = None,
) -> None:
    """Refuse data-loader processes that would outnumber a node's CPUs, before hours of work start.

    Every trial starts ``num_workers`` DataLoader processes (``train.num_workers``). On each alive node
    that can run a trial, the trials it runs at once are ``concurrency`` (``search.max_concurrent``)
    or fewer, as its CPUs (``cpu_per_trial`` each) and GPUs (``gpu_per_trial`` each, fractional
    allowed) fit; those trials' loader processes must not exceed the node's CPUs, else every trial
    waits on the others' loaders. The trial processes themselves are not counted. ``nodes`` is
    ``ray.nodes()`` unless given. Raises :class:`ClusterError` naming both settings and what fits.
    """
    if num_workers <= 0:
        return
    for node in ray.nodes() if nodes is None else nodes:
        if not node.get("Alive"):
            continue
        cpus, gpus = node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0)
        trials = concurrency
        for have, need in ((cpus, cpu_per_trial), (gpus, gpu_per_trial)):
            if need > 0:
                trials = min(trials, int(have / need + 1e-9))  # the epsilon keeps 1 / 0.25 GPU at 4 trials
        if trials < 1 or num_workers * trials <= cpus:
            continue  # a node that runs no trial (a head with CPU: 0) starts no loader either
        fixes = [f"train.num_workers <= {int(cpus // trials)}"] if cpus >= trials else ["train.num_workers=0"]
        if num_workers <= cpus:
            fixes.append(f"search.max_concurrent <= {int(cpus // num_workers)}")
        raise ClusterError(
            f"train.num_workers={num_workers} loader processes per trial x {trials} trial(s) at once "
            f"(search.max_concurrent={concurrency}, resources.cpu={cpu_per_trial:g}, resources.gpu={gpu_per_trial:g}) "
            f"is {num_workers * trials} processes for the {cpus:g} CPUs of node "
            f"{node.get('NodeManagerAddress', node.get('NodeID', '?'))}: set {' or '.join(fixes)}"
        )


def device_for_task(requested: str, gpu_ids: Sequence[Any]) -> str:
    """The device a Ray task trains on: ``requested``, except "auto" in a task Ray assigned no GPU -> "cpu".

    Ray 2.60 no longer hides the GPUs from a task that asked for none (``CUDA_VISIBLE_DEVICES`` is left
    as it was), so "auto" would find the node's GPUs and train on cuda:0 unaccounted, beside the trials
    that were given it. A task given GPUs sees only those (Ray sets ``CUDA_VISIBLE_DEVICES``), so
    "auto" keeps meaning "the GPU when there is one".
    """
    if requested == "auto" and not gpu_ids:
        return "cpu"
    return requested


def assigned_device(requested: str) -> str:
    """:func:`device_for_task` for the GPUs Ray assigned the calling task or actor."""
    return device_for_task(requested, ray.get_runtime_context().get_accelerator_ids().get("GPU", []))


def gpu_memory_fraction(assigned: Mapping[str, float]) -> float | None:
    """The share of its GPU's memory a task may use: its fraction of a GPU (0 < gpu < 1), else None."""
    gpu = float(assigned.get("GPU", 0.0))
    return gpu if 0 < gpu < 1 else None


def cap_gpu_memory() -> float | None:
    """Cap this task's CUDA memory at the fraction of a GPU Ray gave it; returns the cap, or None.

    Ray's fractional GPUs (``resources.gpu: 0.25``: four trials on one GPU) are bookkeeping only: each
    trial's caching allocator would still grow until the GPU is full and the other trials die with
    "CUDA out of memory". ``torch.cuda.set_per_process_memory_fraction`` makes the trial that outgrows
    its share fail instead, naming itself. Does nothing without CUDA or with whole GPUs.
    """
    import torch  # only in a task: this module is imported by drivers that never train

    fraction = gpu_memory_fraction(ray.get_runtime_context().get_assigned_resources())
    if fraction is None or not torch.cuda.is_available():
        return None
    torch.cuda.set_per_process_memory_fraction(fraction, 0)  # the task sees only its GPU, as cuda:0
    return fraction


def data_on_node(data: PreparedData, prepare_args: Mapping[str, Any]) -> PreparedData:
    """The prepared data on this node: as given (shared storage) or re-prepared here, same split and bytes."""
    if Path(data.cache_dir).is_dir() and Path(data.manifest_path).is_file():
        return data
    local = prepare_data(**prepare_args)
    if local.split_hash != data.split_hash:
        raise ClusterError(
            f"split hash on this node ({local.split_hash[:12]}) differs from the driver's "
            f"({data.split_hash[:12]}): the nodes do not see the same dataset"
        )
    if local.data_hash != data.data_hash:
        raise ClusterError(
            f"data hash on this node ({local.data_hash[:12]}) differs from the driver's ({data.data_hash[:12]}): "
            "the same patches in the same splits, but other pixels or masks (another copy of the dataset, or "
            "another version of the synthetic generator)"
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
    loader_workers: int = 0,
) -> Iterator[tuple[int, Any]]:
    """Run ``fn(**kwargs)`` for each item as Ray tasks; yield ``(index, result)`` as each finishes.

    The resource request is checked like a sweep's before anything is submitted, and so are the
    ``loader_workers`` DataLoader processes each task starts, with every task running at once at most.
    """
    started = start_ray(options, address)
    try:
        check_resources(cpu, gpu)
        check_loader_workers(loader_workers, len(kwargs_list), cpu, gpu)
        remote = ray.remote(num_cpus=cpu, num_gpus=gpu, max_retries=max_retries)(fn)
        pending = {remote.remote(**kw): i for i, kw in enumerate(kwargs_list)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            stop_ray()
