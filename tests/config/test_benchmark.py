"""Benchmark files: validation names the key, overrides apply, shipped files load."""

from pathlib import Path

import pytest

from harness.config import TrainConfig, apply_overrides, load_benchmark
from harness.errors import ConfigError
from harness.models import list_models

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    return path


BASE = """
name: t
data: {synthetic: {scenes: 4, patch_size: 32, seed: 0}}
architectures: [unet, unetpp]
search_spaces:
  unet: {lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}, depth: {type: int, low: 1, high: 3}}
  unetpp: {lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}, depth: {type: int, low: 1, high: 3}}
"""


@pytest.mark.parametrize("name", ["smoke.yaml", "demo.yaml", "cloud95.yaml", "cloud38-local.yaml", "seed-study.yaml"])
def test_shipped_benchmarks_load(name):
    path = ROOT / "benchmarks" / name
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    bench = load_benchmark(path)
    assert set(bench.architectures) <= set(list_models())
    for arch in bench.architectures:
        assert {"lr", "depth"} <= set(bench.search_spaces[arch])


def test_the_one_box_recipe_needs_no_server_and_no_shared_path(tmp_path, synthetic_root, monkeypatch):
    from harness.sweep.storage import SweepStorage
    from harness.tracking import check_tracking_uri

    monkeypatch.chdir(tmp_path)  # as a user runs it, from their own folder
    bench = load_benchmark(ROOT / "benchmarks" / "cloud38-local.yaml", [f"data.root={synthetic_root}"])
    assert check_tracking_uri(bench.tracking.uri).startswith(f"sqlite:///{tmp_path}")  # a file, no server
    storage = SweepStorage.parse(bench.storage)
    assert not storage.remote and storage.uri.startswith(str(tmp_path))
    storage.check()
    assert bench.data.cache_dir.startswith("runs/cloud38") and bench.resources.gpu == 1
    assert bench.train.num_workers * bench.search.max_concurrent <= 16  # fits a 16-core 4-GPU box


def test_train_section_is_the_one_train_config(tmp_path):
    bench = load_benchmark(_write(tmp_path, BASE), ["train.loss=ce+dice", "train.device=cuda:1", "train.lr=1e-5"])
    assert isinstance(bench.train, TrainConfig)
    assert bench.train.loss == "ce+dice" and bench.train.device == "cuda:1" and bench.train.lr == 1e-5
    # Defaults come from TrainConfig itself: nothing in the benchmark layer restates them.
    assert bench.train.batch_size == TrainConfig().batch_size
    assert bench.trial_config("unetpp") == TrainConfig(arch="unetpp", loss="ce+dice", device="cuda:1", lr=1e-5)


def test_loaded_benchmark_is_frozen(tmp_path):
    import dataclasses

    bench = load_benchmark(_write(tmp_path, BASE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        bench.storage = "elsewhere"


def test_overrides_apply_and_parse_yaml(tmp_path):
    bench = load_benchmark(
        _write(tmp_path, BASE),
        ["train.epochs=7", "search.num_samples=3", "split.fractions=[0.5, 0.25, 0.25]"],
    )
    assert bench.train.epochs == 7
    assert bench.search.num_samples == 3
    assert bench.split.fractions == (0.5, 0.25, 0.25)


def test_retrain_seeds_are_fresh(tmp_path):
    with pytest.raises(ConfigError, match=r"compare.seeds: must not include train.seed \(3\)"):
        load_benchmark(_write(tmp_path, BASE), ["train.seed=3", "compare.seeds=[1, 3]"])
    bench = load_benchmark(_write(tmp_path, BASE), ["train.seed=3", "compare.seeds=[0, 1]"])
    assert bench.compare.seeds == (0, 1)
    default = load_benchmark(_write(tmp_path, BASE))
    assert default.train.seed not in default.compare.seeds  # the defaults agree


def test_same_budget_settings_for_every_architecture(tmp_path):
    bench = load_benchmark(_write(tmp_path, BASE))
    assert bench.search.num_samples >= 1 and set(bench.search_spaces) == {"unet", "unetpp"}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochs=0", "train.epochs"),
        ("train.epoch=3", "train.epoch"),
        ("train.lr=fast", "train.lr"),
        ("train.loss=hinge", "train.loss"),
        ("split.fractions=[0.5, 0.5, 0.5]", "split.fractions"),
        ("split.kind=diagonal", "split.kind"),
        ("asha.reduction_factor=1", "asha.reduction_factor"),
        ("asha.grace_period=99", "asha.grace_period"),
        ("architectures=[unet, hrcloudnet]", "architectures"),
        ("resources.gpu=1.5", "resources.gpu"),
        ("compare.seeds=[1, 1]", "compare.seeds"),
        # The seed the sweep selected with (train.seed, 0 by default) cannot be a retrain seed.
        ("compare.seeds=[0, 1, 2]", "compare.seeds"),
        ("bogus=1", "bogus"),
        ("data.synthetic.colour=3", "data.synthetic.colour"),
        ("compare.epochs=abc", "compare.epochs"),
        ("ray.num_cpus=two", "ray.num_cpus"),
        ("data.synthetic=7", "data.synthetic"),
        ("train.arch=unet", "train.arch"),
        ("train.device=tpu", "train.device"),
    ],
)
def test_bad_keys_are_named(tmp_path, override, key):
    with pytest.raises(ConfigError) as err:
        load_benchmark(_write(tmp_path, BASE), [override])
    assert key in str(err.value)


def test_unknown_architecture_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unet, unetpp"):
        load_benchmark(_write(tmp_path, BASE), ["architectures=[vnet]"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_benchmark(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_benchmark(_write(tmp_path, "name: [unclosed"))


def test_apply_overrides_creates_sections():
    out = apply_overrides({"a": {"b": 1}}, ["a.c=2", "d.e=[1, 2]"])
    assert out == {"a": {"b": 1, "c": 2}, "d": {"e": [1, 2]}}
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["novalue"])


def test_empty_synthetic_section_means_the_generator_defaults(tmp_path):
    bench = load_benchmark(_write(tmp_path, BASE), ["data.synthetic={}"])
    assert bench.prepare_args()["synthetic"] == {} and bench.prepare_args()["root"] is None


def test_the_study_database_key_and_its_deprecated_name(tmp_path):
    url = f"sqlite:///{tmp_path}/studies.db"
    bench = load_benchmark(ROOT / "benchmarks" / "smoke.yaml", [f"search.study_database={url}"])
    assert bench.search.study_database == url
    with pytest.warns(FutureWarning, match=r"search.storage is deprecated.*search.study_database"):
        old = load_benchmark(ROOT / "benchmarks" / "smoke.yaml", [f"search.storage={url}"])
    assert old.search == bench.search and old.to_dict() == bench.to_dict()
    with pytest.raises(ConfigError, match="search.storage: renamed search.study_database"):
        load_benchmark(ROOT / "benchmarks" / "smoke.yaml", [f"search.storage={url}", f"search.study_database={url}"])
