"""Shared pytest fixtures and options.

Data fixtures are session-scoped and tiny (32 px patches): build once, reuse everywhere. Tests that
modify a dataset must copy it first (see `copy_tree`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.data.cache import ingest
from harness.data.synth import write_synthetic_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
#: One real 38-Cloud training patch (see its PROVENANCE.md), in the repository so a clone tests the real format.
REAL_SAMPLE = Path(__file__).resolve().parent / "data" / "real-38cloud-sample"
#: Parameters of the shared synthetic dataset; tests may rely on them (and on their seed).
TINY_SYNTH = {"scenes": 4, "patch_size": 32, "seed": 0, "test_scenes": 1}


# ------------------------------------------------------------------------------------- data
@pytest.fixture(scope="session")
def real_sample_root() -> Path:
    """The real 38-Cloud sample tree (one training patch, tests/data/real-38cloud-sample)."""
    assert REAL_SAMPLE.is_dir(), f"real sample missing from the repository: {REAL_SAMPLE}"
    return REAL_SAMPLE


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset (TINY_SYNTH): 38-Cloud_training/ with 4 scenes, 38-Cloud_test/ with 1.

    Read-only by convention: copy it with `copy_tree` before changing anything.
    """
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "data", **TINY_SYNTH)


@pytest.fixture(scope="session")
def synthetic_cache(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training patches of `synthetic_root` ingested into a cache folder (read-only by convention)."""
    return ingest(synthetic_root, tmp_path_factory.mktemp("cache") / "cache", progress=False)


@pytest.fixture
def copy_tree(tmp_path: Path):
    """Copy a dataset tree into this test's tmp_path (so it can be broken safely); returns the copy."""

    def _copy(src: Path, name: str = "data") -> Path:
        return Path(shutil.copytree(src, tmp_path / name))

    return _copy


# ------------------------------------------------------------------------------------- ray
@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for the whole session (a head with 2 logical CPUs); tests may add nodes.

    `ray.cluster_utils.Cluster` runs real raylets, so node-failure tests can add and kill nodes.
    """
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def data_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder shared by the sweep tests, so the smoke data is generated and ingested once."""
    return tmp_path_factory.mktemp("sweep-data") / "cache"


# ------------------------------------------------------------------------------------- sweeps
SMOKE = REPO_ROOT / "benchmarks" / "smoke.yaml"


def smoke_overrides(tmp: Path, cache_dir: Path, **extra: object) -> list[str]:
    """`--set` overrides that point the smoke benchmark's outputs into `tmp` and its cache at `cache_dir`."""
    out = [
        f"storage={tmp / 'storage'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        f"data.cache_dir={cache_dir}",
    ]
    return out + [f"{k}={v}" for k, v in extra.items()]


@pytest.fixture(scope="session")
def smoke_sweep(ray_cluster, tmp_path_factory: pytest.TempPathFactory, data_cache_dir: Path):
    """The smoke benchmark swept once per session: (benchmark, outcomes, tmp dir)."""
    from harness.config import load_benchmark
    from harness.sweep.driver import run_sweep

    tmp = tmp_path_factory.mktemp("smoke")
    # System metrics every second: smoke trials last seconds, not the default 10 s interval.
    bench = load_benchmark(SMOKE, smoke_overrides(tmp, data_cache_dir, **{"tracking.system_metrics_s": 1}))
    return bench, run_sweep(bench), tmp


# ------------------------------------------------------------------------------------- full disks
@pytest.fixture
def small_filesystem(tmp_path: Path):
    """``mount(name, size_bytes) -> Path``: a real tmpfs of that size (a full disk is then a real ENOSPC).

    Skips the test, saying why, where this machine does not let the tests mount one (not root, no
    CAP_SYS_ADMIN). Every file system mounted is unmounted at the end.
    """
    import subprocess

    mounted: list[Path] = []

    def mount(name: str, size: int) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={int(size)}", "tmpfs", str(point)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): needs root")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Write a filler file into ``folder`` until its file system has about ``leave`` bytes free."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as out:
        out.write(b"\0" * max(free - leave, 0))
    return filler


# ------------------------------------------------------------------------------------- autograd
def backward_nodes(tensor) -> set[str]:
    """Names of every autograd node behind ``tensor`` (e.g. ``NllLoss2DBackward0``): which kernels backward runs."""
    # Visited nodes are told apart by identity: two nodes of one name (every convolution's backward)
    # lie on different paths, and stopping at the second would miss the graph behind it.
    # (The dict keeps each visited node alive, so that its id cannot be reused by another.)
    names, visited, stack = set(), {}, [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited[id(node)] = node
        names.add(node.name())
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names
