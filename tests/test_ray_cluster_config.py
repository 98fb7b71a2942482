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
