"""check_loader_workers: DataLoader processes per node against its CPUs, from ray.nodes()."""

from __future__ import annotations

import pytest

from harness.cluster import check_loader_workers
from harness.errors import ClusterError


def node(cpu: float, gpu: float = 0.0, *, alive: bool = True, address: str = "10.0.0.2") -> dict:
    """A node as ``ray.nodes()`` describes it (the keys the check reads)."""
    resources = {"CPU": cpu, **({"GPU": gpu} if gpu else {})}
    return {"NodeID": "n-" + address, "Alive": alive, "NodeManagerAddress": address, "Resources": resources}


def test_too_many_loader_processes_are_refused_naming_both_settings():
    # 4 trials fit the 8 CPUs (2 each), each with 4 loader processes: 16 processes on 8 CPUs.
    with pytest.raises(ClusterError) as err:
        check_loader_workers(4, 4, 2, nodes=[node(8)])
    message = str(err.value)
    assert "train.num_workers=4" in message and "search.max_concurrent=4" in message
    assert "16 processes for the 8 CPUs of node 10.0.0.2" in message
    assert "train.num_workers <= 2 or search.max_concurrent <= 2" in message
    check_loader_workers(2, 4, 2, nodes=[node(8)])
    check_loader_workers(4, 2, 2, nodes=[node(8)])


def test_the_trials_a_node_fits_bound_the_count_not_only_the_concurrency():
    # cloud95 on ray_cluster.yaml's GPU nodes: 6 CPUs and 1 GPU a trial, 8 CPUs and 1 GPU a node.
    check_loader_workers(6, 8, 6, 1, nodes=[node(8, 1), node(8, 1, address="10.0.0.3")])
    # The GPU, not the CPUs, limits a big node to one trial.
    check_loader_workers(6, 8, 1, 1, nodes=[node(96, 1)])
    # Four trials share one GPU (0.25 each): 4 x 6 loaders on 8 CPUs.
    with pytest.raises(ClusterError, match="x 4 trial"):
        check_loader_workers(6, 8, 1, 0.25, nodes=[node(8, 1)])


def test_nodes_that_run_no_trial_are_not_checked():
    head = node(0, address="10.0.0.1")  # the driver's head: CPU 0, no trials
    dead = node(2, alive=False, address="10.0.0.9")
    check_loader_workers(6, 8, 6, 1, nodes=[head, dead, node(8, 1)])
    check_loader_workers(0, 64, 1, nodes=[node(2)])  # no loader processes at all


def test_more_loaders_than_a_node_has_cpus_names_only_the_fix_that_works():
    with pytest.raises(ClusterError, match=r"set train\.num_workers <= 4$"):
        check_loader_workers(6, 1, 1, nodes=[node(4)])


def test_reads_the_real_cluster(ray_cluster):
    # The session's local cluster: one node with 2 CPUs.
    with pytest.raises(ClusterError, match="for the 2 CPUs"):
        check_loader_workers(2, 2, 1)
    check_loader_workers(1, 2, 1)
