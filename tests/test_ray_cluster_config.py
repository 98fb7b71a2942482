"""ray_cluster.yaml passes Ray's own cluster-launcher validation."""

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"
ACTIVATE = "source ~/cloudmask-harness/.venv/bin/activate"


def test_every_node_sets_up_python_3_11_or_later_and_runs_from_the_project_venv():
    import re

    config = yaml.safe_load(CONFIG.read_text())
    setup = config["setup_commands"]
    # The AMI's python3 is 3.10: no install into it; a newer CPython is installed and the venv built from it.
    assert not any(re.search(r"python3 -m pip|pip3? install", c) for c in setup)
    (install,) = [c for c in setup if "uv python install" in c]
    version = tuple(int(x) for x in install.split("uv python install ")[1].split()[0].split("."))
    assert version >= (3, 11)
    (build,) = [c for c in setup if "scripts/setup.sh" in c]
    assert f"uv python find {'.'.join(map(str, version))}" in build and build.index("PYTHON=") < build.index("setup.sh")
    assert any(ACTIVATE in c and ">> ~/.bashrc" in c for c in setup)
    # Ray and MLflow start from that venv on every node, not from whatever `ray` the AMI has on PATH.
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all(c.startswith(ACTIVATE + " && ") for c in starts)
    pyproject = (CONFIG.parent / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in pyproject


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
    assert any("scripts/setup.sh" in c for c in config["setup_commands"])  # pip install -e ".[cluster]"


def test_every_node_runs_with_token_auth_and_the_same_token():
    config = yaml.safe_load(CONFIG.read_text())
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith(f"{ACTIVATE} && RAY_AUTH_MODE=token ray start") for c in starts)
    # One token for all nodes: the file generated beforehand on the launching machine, copied to each node.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("export RAY_AUTH_MODE=token" in c for c in config["setup_commands"])  # ray exec / job drivers


def test_mlflow_proxies_artifacts_and_nodes_install_the_cluster_extra():
    config = yaml.safe_load(CONFIG.read_text())
    mlflow_cmd = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    assert "--serve-artifacts" in mlflow_cmd and "--artifacts-destination s3://" in mlflow_cmd
    assert any("EXTRAS=cluster bash scripts/setup.sh" in c for c in config["setup_commands"])
    pyproject = (CONFIG.parent / "pyproject.toml").read_text()
    assert "cluster = [" in pyproject and "ray[default" in pyproject
