"""Ray lifecycle and tasks on a real local Ray cluster."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from harness.cluster import (
    assigned_device,
    cap_gpu_memory,
    check_reachable,
    check_resources,
    data_on_node,
    device_for_task,
    gpu_memory_fraction,
    run_tasks,
    token_source,
)
from harness.config import load_benchmark
from harness.data.prepare import prepare_data
from harness.errors import ClusterError
from harness.metrics import confusion_stats
from tests.conftest import SMOKE


def test_run_tasks_yields_every_result_with_its_index(ray_cluster):
    bench = load_benchmark(SMOKE)
    # A function the workers can import (a test module's would not be on their path).
    jobs = [{"tp": tp, "fn": 1, "fp": 1, "tn": 1} for tp in range(5)]
    results = dict(run_tasks(confusion_stats, jobs, cpu=1, gpu=0, max_retries=0, options=bench.ray))
    assert {i: r["iou"] for i, r in results.items()} == {tp: tp / (tp + 2) for tp in range(5)}


def test_resources_no_node_has_are_refused_naming_them(ray_cluster):
    with pytest.raises(ClusterError, match="cpu=64, gpu=0"):
        check_resources(64, 0)
    check_resources(1, 0)


def test_unreachable_address_fails_in_seconds():
    with pytest.raises(ClusterError, match="127.0.0.1:1"):
        check_reachable("127.0.0.1:1", timeout=2)


def test_a_node_without_the_cache_prepares_the_same_split(tmp_path):
    args = {"synthetic": {"scenes": 4, "patch_size": 32, "seed": 0}, "split_kind": "scene", "split_seed": 0}
    data = prepare_data(cache_dir=tmp_path / "a" / "cache", **args)
    assert data_on_node(data, {"cache_dir": tmp_path / "b" / "cache", **args}) == data  # the driver's cache is here
    shutil.rmtree(tmp_path / "a")
    local = data_on_node(data, {"cache_dir": str(tmp_path / "b" / "cache"), **args})
    assert local.split_hash == data.split_hash and local.cache_dir != data.cache_dir
    other = dataclasses.replace(data, split_hash="0" * 64)
    with pytest.raises(ClusterError, match="split hash on this node"):
        data_on_node(other, {"cache_dir": str(tmp_path / "c" / "cache"), **args, "split_seed": 1})
    # Same names in the same splits, other bytes (another copy, another generator): refused as well.
    assert local.data_hash == data.data_hash
    with pytest.raises(ClusterError, match="data hash on this node .* other pixels or masks"):
        data_on_node(dataclasses.replace(data, data_hash="0" * 64), {"cache_dir": tmp_path / "b" / "cache", **args})


def test_address_auto_with_a_stale_address_file_fails_in_seconds_naming_it(tmp_path, monkeypatch):
    """`ray start` left its address in RAY_TMPDIR/ray/ray_current_cluster, then the cluster went away."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:1\n")
    with pytest.raises(ClusterError, match=r"resolved to 127\.0\.0\.1:1 from .*ray_current_cluster.*stale"):
        check_reachable("auto", timeout=2)
    (tmp_path / "ray" / "ray_current_cluster").unlink()
    with pytest.raises(ClusterError, match="no Ray cluster to join"):
        check_reachable("auto", timeout=2)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # Ray reads RAY_ADDRESS first, and so do we
    with pytest.raises(ClusterError, match="from RAY_ADDRESS"):
        check_reachable("auto", timeout=2)


def test_token_source_follows_rays_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    assert token_source() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t")
    assert token_source() == str(tmp_path / ".ray" / "auth_token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    assert token_source().endswith("(no such file)")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    assert token_source() == "RAY_AUTH_TOKEN"


def test_a_private_ray_instance_refuses_processes_without_its_token(tmp_path):
    """Ray's servers listen on every interface: the private instance takes only processes with its random token."""
    import os
    import subprocess
    import sys

    driver = (
        "import os\n"
        "from harness.cli import guard_private_ray\n"
        "guard_private_ray()\n"  # what `cloudmask sweep|compare|demo` without --address do first
        "import ray\n"
        "from harness.cluster import ray_session\n"
        "from harness.config.benchmark import RayConfig\n"
        "with ray_session(RayConfig(num_cpus=1), None):\n"
        "    assert ray.get(ray.remote(lambda: 42).remote()) == 42\n"
        "    print(os.environ['RAY_AUTH_MODE'], len(os.environ['RAY_AUTH_TOKEN']), flush=True)\n"
        "    print(ray.get_runtime_context().gcs_address, flush=True)\n"
        "    input()\n"  # stays up until the test has tried to join
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    proc = subprocess.Popen(
        [sys.executable, "-c", driver], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().split() == ["token", "64"]
        gcs = proc.stdout.readline().strip()
        intruder = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address={gcs!r})"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert intruder.returncode != 0 and "Failed to connect" in intruder.stderr
    finally:
        proc.communicate("\n", timeout=120)
    assert proc.returncode == 0


def test_tasks_whose_loaders_outnumber_the_cpus_are_refused_before_any_runs(ray_cluster):
    """The final comparison's retrains: 2 tasks at once on the 2-CPU head, 2 loader processes each."""
    bench = load_benchmark(SMOKE)
    jobs = [{"tp": 1, "fn": 1, "fp": 1, "tn": 1}] * 2
    with pytest.raises(ClusterError, match="train.num_workers=2 loader processes per trial x 2"):
        list(run_tasks(confusion_stats, jobs, cpu=1, gpu=0, max_retries=0, options=bench.ray, loader_workers=2))
    done = run_tasks(confusion_stats, jobs, cpu=1, gpu=0, max_retries=0, options=bench.ray, loader_workers=1)
    assert len(list(done)) == 2


def test_auto_is_the_cpu_only_for_a_task_given_no_gpu():
    assert device_for_task("auto", []) == "cpu"
    assert device_for_task("auto", ["0"]) == "auto"  # Ray set CUDA_VISIBLE_DEVICES to the GPU it gave
    assert device_for_task("cpu", ["0"]) == "cpu"
    assert device_for_task("cuda:0", []) == "cuda:0"  # an explicit device is the sweep checks' business
    assert [gpu_memory_fraction(r) for r in ({"GPU": 0.25}, {"GPU": 1.0}, {"GPU": 2.0}, {"CPU": 1})] == [
        0.25,
        None,
        None,
        None,
    ]


def _where_would_auto_train() -> tuple[str, str | None, float | None]:
    import os

    import ray

    share = gpu_memory_fraction(ray.get_runtime_context().get_assigned_resources())
    cap_gpu_memory()  # no CUDA on this machine: nothing to cap, and no error
    return assigned_device("auto"), os.environ.get("CUDA_VISIBLE_DEVICES"), share


def test_a_task_given_no_gpu_on_a_gpu_node_trains_on_the_cpu(ray_cluster):
    # A node with a (logical) GPU: Ray 2.60 leaves its GPU visible to tasks that asked for none, so
    # "auto" must come from what Ray assigned, not from what CUDA can see.
    import ray

    node = ray_cluster.add_node(num_cpus=1, num_gpus=1, resources={"gpu_node": 1})
    try:
        on_gpu_node = {"resources": {"gpu_node": 0.01}, "num_cpus": 0}
        given = ray.remote(num_gpus=1, **on_gpu_node)(_where_would_auto_train)
        quarter = ray.remote(num_gpus=0.25, **on_gpu_node)(_where_would_auto_train)
        not_given = ray.remote(num_gpus=0, **on_gpu_node)(_where_would_auto_train)
        assert ray.get(given.remote(), timeout=120) == ("auto", "0", None)
        # a quarter of the GPU: a quarter of its memory (torch.cuda.set_per_process_memory_fraction)
        assert ray.get(quarter.remote(), timeout=120) == ("auto", "0", 0.25)
        device, _visible, share = ray.get(not_given.remote(), timeout=120)
        assert (device, share) == ("cpu", None)
    finally:
        ray_cluster.remove_node(node)


def _serve(handler_kind: str):
    """A local server that is not Ray: an HTTP server (MLflow, a dashboard), or one that never answers."""
    import http.server
    import socket
    import threading

    if handler_kind == "http":
        server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.server_address[1], server.shutdown
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), reads and answers nothing
    return silent.getsockname()[1], silent.close


@pytest.mark.parametrize(("kind", "answer"), [("http", "answered '<!DOCTYPE HTML>"), ("silent", "answered nothing")])
def test_an_address_where_something_else_listens_is_refused_in_seconds(kind, answer):
    import time

    port, stop = _serve(kind)
    try:
        started = time.monotonic()
        with pytest.raises(ClusterError, match=f"127.0.0.1:{port}: something listens there, but not Ray's GCS") as e:
            check_reachable(f"127.0.0.1:{port}", timeout=2.0)
        assert answer in str(e.value) and "6379 by default" in str(e.value)
        assert time.monotonic() - started < 10  # Ray itself would retry this address for ever
    finally:
        stop()


def test_a_real_ray_gcs_passes_the_probe(ray_cluster):
    check_reachable(ray_cluster.address)


def test_a_sigkilled_driver_takes_its_private_ray_instance_with_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    code = (
        "import time\n"
        "from harness.cluster import start_ray\n"
        "from harness.config.benchmark import RayConfig\n"
        "start_ray(RayConfig(num_cpus=1), None)\n"  # what `cloudmask sweep` without --address does
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "up"
        deadline = time.monotonic() + 60
        started: list[psutil.Process] = []
        while time.monotonic() < deadline:  # the raylet starts its agents a little after ray.init returns
            started = psutil.Process(driver.pid).children(recursive=True)
            if sum("Agent" in " ".join(p.cmdline()) or "agent" in p.name().lower() for p in started) >= 1:
                break
            time.sleep(0.5)
        ray_processes = [p for p in started if "psutil" not in " ".join(p.cmdline())]  # not the watchdog
        assert len(ray_processes) >= 4, [p.name() for p in started]
        time.sleep(1.5)  # the watchdog looks at the driver's processes several times a second
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    _, alive = psutil.wait_procs(ray_processes, timeout=30)
    assert not alive, [(p.pid, p.name()) for p in alive]  # before: the raylet's agents stayed, for ever
