"""ray_cluster.yaml passes Ray's own cluster-launcher validation."""

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"


def test_cluster_config_validates_with_ray():
    config = yaml.safe_load(CONFIG.read_text())
    validate_config(prepare_config(config))


def test_cluster_config_shape():
    config = yaml.safe_load(CONFIG.read_text())
    head = config["available_node_types"][config["head_node_type"]]
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["min_workers"] >= 1
    assert head["resources"]["CPU"] == 0  # trials run on the GPU workers, the head drives
    mlflow_cmd = " ".join(config["head_start_ray_commands"])
    assert "mlflow server --host 127.0.0.1" in mlflow_cmd  # bound to loopback, reached by a tunnel
    assert any("pip install" in c and "-e" in c for c in config["setup_commands"])


def test_every_node_runs_with_token_auth_and_the_same_token():
    config = yaml.safe_load(CONFIG.read_text())
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts)
    # One token for all nodes: the file generated beforehand on the launching machine, copied to each node.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("export RAY_AUTH_MODE=token" in c for c in config["setup_commands"])  # ray exec / job drivers


def test_mlflow_proxies_artifacts_and_nodes_install_the_cluster_extra():
    config = yaml.safe_load(CONFIG.read_text())
    mlflow_cmd = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    assert "--serve-artifacts" in mlflow_cmd and "--artifacts-destination s3://" in mlflow_cmd
    assert any('".[cluster]"' in c for c in config["setup_commands"])
    pyproject = (CONFIG.parent / "pyproject.toml").read_text()
    assert "cluster = [" in pyproject and "ray[default" in pyproject
