"""TrainConfig: one schema, its defaults, vocabularies from their owners, typed round trips."""

import dataclasses
import json

import numpy as np
import pytest

from harness.config import TrainConfig, from_flat, to_flat
from harness.config.train import SEARCHABLE_KEYS, check_value
from harness.data.dataset import NORMALISATIONS
from harness.errors import ConfigError
from harness.models import NORMS, list_models
from harness.training.losses import LOSSES


def test_vocabularies_are_the_owners():
    for arch in list_models():
        assert TrainConfig(arch=arch).arch == arch
    for loss in LOSSES:  # combined losses too: the benchmark and a search space accept the same set
        assert TrainConfig(loss=loss).loss == loss
    for norm in NORMS:
        assert TrainConfig(norm=norm).norm == norm
    for normalisation in NORMALISATIONS:
        assert TrainConfig(normalisation=normalisation).normalisation == normalisation


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"arch": "vnet"}, "train.arch"),
        ({"loss": "focal"}, "train.loss"),
        ({"norm": "group"}, "train.norm"),
        ({"normalisation": "minmax"}, "train.normalisation"),
        ({"lr": 0.0}, "train.lr"),
        ({"epochs": 0}, "train.epochs"),
        ({"depth": 7}, "train.depth"),
        ({"device": "tpu"}, "train.device"),
        ({"weight_decay": -1.0}, "train.weight_decay"),
        ({"depth": 2.5}, "train.depth"),
        ({"augment": "yes"}, "train.augment"),
        ({"deep_supervision": True}, "train.deep_supervision"),  # unet has no deep supervision heads
    ],
)
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**kwargs)
    assert key in str(err.value)


def test_sampler_values_are_made_plain_and_the_config_is_frozen():
    config = TrainConfig(lr=np.float64(1e-3), depth=np.int64(3), device="cuda:1")
    assert type(config.lr) is float and type(config.depth) is int and config.device == "cuda:1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    assert dataclasses.replace(config, lr=2e-3).lr == 2e-3 and config.lr == 1e-3


def test_flat_round_trip_through_json_keeps_types():
    config = TrainConfig(arch="unetpp", lr=1e-5, deep_supervision=True, loss="ce+dice")
    back = from_flat(json.loads(json.dumps(to_flat(config))))
    assert back == config and type(back.lr) is float
    # A number written as text (YAML reads 1e-5 without a dot as a string) still becomes a float.
    assert from_flat({"lr": "1e-05"}).lr == 1e-5


def test_from_flat_refuses_unknown_keys_unless_told_to_ignore_them():
    with pytest.raises(ConfigError, match="train.colour"):
        from_flat({"colour": 1})
    assert from_flat({"lr": 0.1, "trial_id": "x"}, ignore=("trial_id",)).lr == 0.1


def test_check_value_and_searchable_keys():
    assert check_value("lr", 1) == 1.0
    with pytest.raises(ConfigError, match="loss"):
        check_value("loss", "bogus")
    assert "lr" in SEARCHABLE_KEYS and "depth" in SEARCHABLE_KEYS
    assert not {"arch", "seed", "device"} & set(SEARCHABLE_KEYS)


def test_an_architectures_depth_range_is_checked_naming_the_depth_key(monkeypatch):
    from harness.models import ModelSpec, register_model
    from harness.models import registry as registry_module

    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    register_model(
        ModelSpec(
            name="shallow", label="Shallow", family="U-Net", builder="harness.models.unet:UNet", depth_range=(1, 3)
        )
    )
    assert TrainConfig(arch="shallow", depth=3).depth == 3
    with pytest.raises(ConfigError, match=r"train\.depth: shallow takes depth 1\.\.3, got 4"):
        TrainConfig(arch="shallow", depth=4)
    with pytest.raises(ConfigError, match=r"train\.deep_supervision: only unetpp has deep supervision heads"):
        TrainConfig(arch="shallow", depth=2, deep_supervision=True)
