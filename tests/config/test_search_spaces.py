"""Search spaces in a benchmark: checked against the typed training config at load, errors naming the key."""

from pathlib import Path

import pytest

from harness.config import load_benchmark
from harness.config.search_spaces import load_search_spaces
from harness.config.train import TrainConfig
from harness.errors import ConfigError
from harness.models import get_model_spec, list_models
from tests.config.test_benchmark import BASE, _write

REPO = Path(__file__).resolve().parents[2]
INT_1_TO_3 = {"type": "int", "low": 1, "high": 3, "log": False, "step": 1}
DEFAULT_SPACE = "{lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}, depth: {type: int, low: 1, high: 3}}"


def _with_space(tmp_path, arch: str, entry: str):
    """The base benchmark file with ``arch``'s search space replaced by ``entry`` (YAML)."""
    return _write(tmp_path, BASE.replace(f"  {arch}: {DEFAULT_SPACE}", f"  {arch}: {entry}"))


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ("{lr: {type: loguniform, low: 0, high: 1}}", "lr.low"),
        ("{lr: {type: loguniform, low: 1.0e-2, high: 1.0e-4}}", "lr: low"),
        ("{lr: {type: gaussian, low: 1, high: 2}}", "lr.type"),
        ("{depth: {type: int, low: 1, high: 9}}", "depth"),
        ("{depth: {type: int, low: 1, high: 6}}", "divisible"),
        ("{colour: {type: categorical, choices: [red]}}", "colour"),
        ("{loss: {type: categorical, choices: []}}", "loss.choices"),
        ("{lr: {type: uniform, low: 0.1, high: 0.2, sigma: 3}}", "lr.sigma"),
        # A value fit would refuse fails at load, not inside a Ray trial.
        ("{loss: {type: categorical, choices: [ce, bogus]}}", "bogus"),
        ("{depth: {type: loguniform, low: 1, high: 3}}", "depth.type"),
    ],
)
def test_bad_search_space_entries_are_named(tmp_path, space, needle):
    path = _with_space(tmp_path, "unetpp", f"{space}")
    with pytest.raises(ConfigError) as err:
        load_benchmark(path)
    assert "search_spaces.unetpp" in str(err.value) and needle in str(err.value)


def test_sampled_value_must_fit_the_architecture(tmp_path):
    path = _with_space(tmp_path, "unet", "{lr: 0.1, deep_supervision: {type: categorical, choices: [false, true]}}")
    with pytest.raises(ConfigError, match="search_spaces.unet.deep_supervision: True does not fit the unet config"):
        load_benchmark(path)


def test_missing_search_space_file_is_named(tmp_path):
    path = _with_space(tmp_path, "unetpp", "no/such/space.yaml")
    with pytest.raises(ConfigError, match="no/such/space.yaml"):
        load_benchmark(path)


@pytest.mark.parametrize(
    ("entry", "same_as"),
    [
        ("{depth: {type: randint, lower: 1, upper: 4}}", INT_1_TO_3),
        (
            "{depth: {type: qrandint, lower: 1, upper: 3, q: 1}}",
            {"type": "int", "low": 1, "high": 3, "log": False, "step": 1},
        ),
        (
            "{lr: {type: loguniform, lower: 1.0e-4, upper: 1.0e-2, base: 10}}",
            {"type": "loguniform", "low": 1e-4, "high": 1e-2, "log": True, "step": None},
        ),
        ("{loss: {type: choice, categories: [ce, dice]}}", {"type": "categorical", "choices": ["ce", "dice"]}),
    ],
)
def test_ray_tunes_words_are_read_as_the_same_distribution(tmp_path, entry, same_as):
    bench = load_benchmark(_with_space(tmp_path, "unetpp", entry))
    (spec,) = bench.search_spaces["unetpp"].values()
    assert spec == same_as


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ("{depth: {grid_search: [1, 2]}}", "depth: grid_search is not supported: a grid is not what TPE samples"),
        ("{lr: {type: qloguniform, lower: 1.0e-4, upper: 1.0e-2, q: 1.0e-4}}", "write {type: loguniform"),
        ("{lr: {type: randn, mean: 0, sd: 1}}", "Optuna has no normal distribution"),
        ("{depth: {type: qrandint, lower: 1, upper: 3, q: 2}}", "make lower a multiple of q"),
        ("{lr: {type: uniform, low: 0.1, lower: 0.1, high: 0.2}}", "give low or lower"),
    ],
)
def test_ray_words_without_an_optuna_equivalent_say_what_to_write(tmp_path, entry, needle):
    with pytest.raises(ConfigError) as err:
        load_benchmark(_with_space(tmp_path, "unetpp", entry))
    assert needle in str(err.value) and "search_spaces.unetpp" in str(err.value)


@pytest.mark.parametrize("arch", list_models())
def test_every_registered_architecture_ships_a_search_space_that_fits_it(arch):
    # Registry-driven: registering an architecture without search_spaces/<arch>.yaml fails here.
    path = REPO / "search_spaces" / f"{arch}.yaml"
    assert path.is_file(), f"no search space for {arch}"
    spaces = load_search_spaces(
        {arch: str(path)},
        architectures=[arch],
        trial_config=lambda a: TrainConfig(arch=a, depth=get_model_spec(a).depth_range[0]),
        patch_size=384,
        base_dir=None,
    )
    assert {"lr", "depth"} <= set(spaces[arch])
    if get_model_spec(arch).encoders:
        assert set(spaces[arch]["encoder"]["choices"]) <= set(get_model_spec(arch).encoders)


def test_an_encoder_the_architecture_does_not_take_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"search_spaces.fpn.encoder: 'mit_b0' does not fit the fpn config"):
        load_search_spaces(
            {"fpn": {"encoder": {"type": "categorical", "choices": ["resnet18", "mit_b0"]}}},
            architectures=["fpn"],
            trial_config=lambda a: TrainConfig(arch=a, depth=4),
            patch_size=64,
            base_dir=None,
        )
