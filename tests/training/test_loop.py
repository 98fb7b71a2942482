"""Training loop: reports, seeding, exact resume, divergence, checkpoints, evaluation and prediction."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config import TrainConfig
from harness.metrics import confusion_counts, confusion_stats
from harness.training.checkpoints import CHECKPOINT_FILENAME, load_checkpoint
from harness.training.loop import (
    FitResult,
    evaluate,
    fit,
    make_datasets,
    make_eval_dataset,
    make_loader,
    model_from_checkpoint,
    predict,
    train_one_epoch,
)
from harness.training.losses import build_loss

METRIC_KEYS = {
    "epoch", "train_loss", "val_loss", "val_accuracy", "val_iou", "val_precision", "val_recall", "val_f1",
    "epoch_seconds", "train_images_per_second", "status", "device", "precision",
}  # fmt: skip
# Quantities that depend only on the seed (timings do not).
SEEDED_KEYS = ("train_loss", "val_loss", "val_accuracy", "val_iou", "val_precision", "val_recall", "val_f1")
TINY = TrainConfig(arch="unet", depth=2, base_channels=8, batch_size=4, lr=1e-2, seed=7, augment=True, device="cpu")


#: 5 scenes of 3x3 to 4x4 patches of 32 px; with a scene split about 18 % of train and val pixels are cloud.
SYNTHETIC = {"scenes": 5, "patch_size": 32, "seed": 0, "grid": (3, 4), "test_scenes": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny synthetic dataset prepared through the public API, split by scene."""
    from harness.data.prepare import prepare_data

    prepared = prepare_data(synthetic=SYNTHETIC, cache_dir=tmp_path_factory.mktemp("train-data") / "cache")
    assert len(prepared.indices("train")) and len(prepared.indices("val"))
    return prepared


class Recorder:
    """A ``report`` callback that keeps the metrics and copies the checkpoint of chosen epochs."""

    def __init__(self, keep_dir: Path | None = None, keep_epochs=()):
        self.metrics: list[dict] = []
        self.checkpoint_dirs: list[str | None] = []
        self.keep_dir, self.keep_epochs = keep_dir, set(keep_epochs)

    def __call__(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.metrics.append(dict(metrics))
        self.checkpoint_dirs.append(checkpoint_dir)
        if checkpoint_dir is not None:
            assert (Path(checkpoint_dir) / CHECKPOINT_FILENAME).is_file()
            if metrics["epoch"] in self.keep_epochs:
                shutil.copytree(checkpoint_dir, self.keep_dir / f"epoch-{metrics['epoch']}")


def seeded(history) -> np.ndarray:
    """The seed-determined metrics of a history; compare with assert_array_equal (NaN equals NaN)."""
    return np.array([[entry[key] for key in SEEDED_KEYS] for entry in history])


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


@pytest.fixture(scope="module")
def four_epochs(data, tmp_path_factory):
    """4 epochs straight, keeping the epoch-2 checkpoint."""
    keep = tmp_path_factory.mktemp("kept-checkpoints")
    recorder = Recorder(keep, keep_epochs=[2])
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    result = fit(replace(TINY, epochs=4), data, recorder)
    # fit switches deterministic kernels on for its duration only.
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before
    return result, recorder, keep


def test_fit_reports_every_epoch_with_the_contract_metrics(four_epochs):
    result, recorder, _ = four_epochs
    assert isinstance(result, FitResult) and result.status == "completed" and result.seconds > 0
    assert [m["epoch"] for m in recorder.metrics] == [1, 2, 3, 4]
    assert [m["status"] for m in recorder.metrics] == ["running", "running", "running", "completed"]
    for metrics in recorder.metrics:
        assert set(metrics) == METRIC_KEYS
        for key in ("train_loss", "val_loss", "val_accuracy", "val_iou", "epoch_seconds"):
            assert math.isfinite(metrics[key]), key
        # Precision is NaN (not an error) in an epoch that predicts no cloud at all.
        for key in ("val_accuracy", "val_iou", "val_precision", "val_recall", "val_f1"):
            assert 0 <= metrics[key] <= 1 or math.isnan(metrics[key]), key
    assert result.history == recorder.metrics
    assert {(m["device"], m["precision"]) for m in recorder.metrics} == {("cpu", "fp32")} and result.precision == "fp32"
    # The per-epoch checkpoint directories are temporary: gone once report returned.
    assert all(d is not None and not Path(d).exists() for d in recorder.checkpoint_dirs)
    assert recorder.metrics[-1]["train_loss"] < recorder.metrics[0]["train_loss"]


def test_same_seed_gives_same_losses_and_resume_equals_straight_training(data, four_epochs, tmp_path):
    straight, _, _ = four_epochs
    # Same seed, another run of 2 epochs: identical to the first 2 epochs of the straight run.
    recorder = Recorder(tmp_path, keep_epochs=[2])
    first_half = fit(replace(TINY, epochs=2), data, recorder)
    np.testing.assert_array_equal(seeded(first_half.history), seeded(straight.history[:2]))
    # Resume from its epoch-2 checkpoint for 2 more: exactly the straight 4-epoch run.
    resumed_recorder = Recorder()
    resumed = fit(replace(TINY, epochs=4), data, resumed_recorder, checkpoint_dir=tmp_path / "epoch-2")
    assert [m["epoch"] for m in resumed_recorder.metrics] == [3, 4]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    np.testing.assert_array_equal(seeded(resumed.history), seeded(straight.history))
    assert_same_weights(resumed.model, straight.model)


def test_resume_from_a_checkpoint_reported_mid_run(data, four_epochs):
    straight, _, kept = four_epochs
    resumed = fit(replace(TINY, epochs=4), data, None, checkpoint_dir=kept / "epoch-2")
    np.testing.assert_array_equal(seeded(resumed.history), seeded(straight.history))
    assert_same_weights(resumed.model, straight.model)


def test_a_different_seed_trains_differently(data, four_epochs):
    straight, _, _ = four_epochs
    other = fit(replace(TINY, epochs=1, seed=8), data, None)
    assert other.history[0]["train_loss"] != straight.history[0]["train_loss"]


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_model(four_epochs):
    _, _, kept = four_epochs
    path = kept / "epoch-2" / CHECKPOINT_FILENAME
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["epoch"] == 2
    assert {"model", "optimiser", "history", "rng", "config", "band_stats"} <= set(checkpoint)
    assert {"python", "numpy", "torch", "cuda", "loader"} <= set(checkpoint["rng"])
    assert [h["epoch"] for h in checkpoint["history"]] == [1, 2]
    assert checkpoint["config"]["arch"] == "unet" and checkpoint["config"]["epochs"] == 4
    model = model_from_checkpoint(path)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["model"][key])
    assert load_checkpoint(path)["epoch"] == 2


def test_huge_learning_rate_is_reported_as_diverged(data):
    # Without batch norm a learning rate of 1e10 makes the activations overflow to inf, the loss NaN.
    recorder = Recorder()
    result = fit(replace(TINY, norm="none", lr=1e10, epochs=3), data, recorder)
    assert result.status == "diverged"
    assert [m["status"] for m in recorder.metrics] == ["diverged"]
    assert recorder.checkpoint_dirs == [None]
    assert not math.isfinite(recorder.metrics[0]["train_loss"])
    assert result.history == recorder.metrics


@pytest.mark.parametrize(
    "overrides",
    [
        {"arch": "unetpp", "deep_supervision": True, "loss": "ce+jaccard", "normalisation": "standardise"},
        {"arch": "unetpp", "loss": "dice", "augment": False, "weight_decay": 1e-4, "eval_batch_size": 3},
        {"loss": "jaccard", "num_workers": 1},
    ],
)
def test_other_architectures_losses_and_options_train(data, overrides):
    recorder = Recorder()
    result = fit(replace(TINY, epochs=1, **overrides), data, recorder)
    assert result.status == "completed"
    assert math.isfinite(recorder.metrics[0]["train_loss"]) and math.isfinite(recorder.metrics[0]["val_loss"])


def test_standardise_stores_band_stats_in_the_checkpoint(data, tmp_path):
    recorder = Recorder(tmp_path, keep_epochs=[1])
    fit(replace(TINY, epochs=1, normalisation="standardise"), data, recorder)
    mean, std = load_checkpoint(tmp_path / "epoch-1" / CHECKPOINT_FILENAME)["band_stats"]
    assert len(mean) == len(std) == 4 and all(s > 0 for s in std)


def test_evaluate_and_predict_agree(data, four_epochs):
    straight, _, _ = four_epochs
    _, val_set, _ = make_datasets(replace(TINY, epochs=4), data)
    loader = make_loader(val_set, batch_size=5, device=torch.device("cpu"))
    result = evaluate(straight.model, loader, "cpu", per_image=True)
    # evaluate with the training loss (CE by default) reproduces the last reported val metrics.
    last = straight.history[-1]
    assert result["iou"] == last["val_iou"] and result["accuracy"] == last["val_accuracy"]
    assert result["loss"] == pytest.approx(last["val_loss"], rel=1e-6)
    assert result["per_image_counts"].shape == (len(val_set), 4)
    assert result["per_image_counts"].sum(axis=0).tolist() == [result[k] for k in ("tp", "fn", "fp", "tn")]

    masks = predict(straight.model, val_set, "cpu", batch_size=4)
    assert masks.dtype == np.uint8 and masks.shape == (len(val_set), 32, 32)
    assert set(np.unique(masks)) <= {0, 1}
    targets = torch.stack([val_set[i][1] for i in range(len(val_set))])
    assert confusion_stats(*confusion_counts(torch.from_numpy(masks), targets)) == {
        k: v for k, v in result.items() if k not in ("loss", "images", "seconds", "per_image_counts")
    }
    # threshold 0.5 on the cloud probability is the argmax of two classes; a threshold of 0 marks all.
    np.testing.assert_array_equal(predict(straight.model, val_set, "cpu", 4, threshold=0.5), masks)
    assert predict(straight.model, val_set, "cpu", 4, threshold=0.0).mean() > masks.mean()


def test_tiny_model_overfits_four_synthetic_patches(data):
    torch.manual_seed(0)
    config = replace(TINY, augment=False, normalisation="standardise")
    train_set, _, _ = make_datasets(config, data)
    # Four patches with both classes in them, one batch.
    cloudy = [i for i in range(len(train_set)) if 0.1 < train_set[i][1].float().mean() < 0.9][:4]
    assert len(cloudy) == 4
    subset = torch.utils.data.Subset(train_set, cloudy)
    loader = make_loader(subset, batch_size=4, device=torch.device("cpu"), generator=torch.Generator())
    from harness.models import build_model

    model = build_model("unet", depth=2, base_channels=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        train_one_epoch(model, loader, optimiser, build_loss("ce"), torch.device("cpu"))
    result = evaluate(model, make_loader(subset, batch_size=4, device=torch.device("cpu")), "cpu")
    assert result["iou"] > 0.9


def test_resuming_a_checkpoint_of_another_network_is_refused(four_epochs):
    _, _, kept = four_epochs
    with pytest.raises(ValueError, match="different network"):
        fit(replace(TINY, depth=3, epochs=4), None, None, checkpoint_dir=kept / "epoch-2")


def test_fit_refuses_a_loose_dict(data):
    with pytest.raises(TypeError, match="TrainConfig"):
        fit({"arch": "unet"}, data, None)


def test_evaluate_hands_every_prediction_to_the_caller_in_order(data, four_epochs):
    straight, _, _ = four_epochs
    test_set = make_eval_dataset(TINY, data, "val")
    batches = []
    loader = make_loader(test_set, batch_size=3, device=torch.device("cpu"))
    result = evaluate(straight.model, loader, "cpu", on_predictions=batches.append)
    np.testing.assert_array_equal(np.concatenate(batches), predict(straight.model, test_set, "cpu", batch_size=4))
    assert result["images"] == len(test_set)


@pytest.mark.parametrize(
    ("device", "precision", "bf16", "expected"),
    [
        ("cuda:0", "auto", True, torch.bfloat16),  # A100, H100: bf16, no scaler
        ("cuda:0", "auto", False, torch.float16),  # T4, V100: fp16 with a GradScaler, not emulated bf16
        ("cuda", "fp32", True, None),
        ("cuda", "fp16", True, torch.float16),
        ("cpu", "auto", None, None),  # autocast on the CPU would only slow the small models down
        ("cpu", "bf16", None, torch.bfloat16),
        ("cpu", "fp16", None, torch.float16),
    ],
)
def test_autocast_dtype_decides_the_precision_per_device(device, precision, bf16, expected):
    from harness.training.loop import autocast_dtype, precision_name

    assert autocast_dtype(device, precision, bf16_supported=bf16) is expected
    assert precision_name(expected) == {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[expected]


def test_bf16_on_a_gpu_without_it_is_refused_naming_the_key():
    from harness.training.loop import autocast_dtype

    with pytest.raises(ValueError, match=r"train\.precision: bf16 requested but cuda:0 has no bf16"):
        autocast_dtype("cuda:0", "bf16", bf16_supported=False)
    with pytest.raises(ValueError, match=r"train\.precision: expected one of auto, bf16, fp16, fp32"):
        autocast_dtype("cpu", "fp8")


def test_fp16_trains_with_a_grad_scaler_and_resumes_it(data, tmp_path):
    # The fp16 path a GPU without bf16 takes, run on the CPU (autocast + GradScaler work there too).
    config = replace(TINY, epochs=2, precision="fp16")
    recorder = Recorder(tmp_path, keep_epochs=[1])
    straight = fit(config, data, recorder)
    assert straight.precision == "fp16" and {m["precision"] for m in recorder.metrics} == {"fp16"}
    assert all(math.isfinite(m["train_loss"]) for m in straight.history)
    checkpoint = load_checkpoint(tmp_path / "epoch-1" / CHECKPOINT_FILENAME)
    assert checkpoint["scaler"]["scale"] > 0  # the scaler's state travels with the weights
    resumed = fit(config, data, None, checkpoint_dir=tmp_path / "epoch-1")
    np.testing.assert_array_equal(seeded(resumed.history), seeded(straight.history))
    # fp32 training writes no scaler state
    (tmp_path / "fp32").mkdir()
    fit(replace(TINY, epochs=1), data, Recorder(tmp_path / "fp32", keep_epochs=[1]))
    assert load_checkpoint(tmp_path / "fp32" / "epoch-1" / CHECKPOINT_FILENAME)["scaler"] is None


def test_loader_workers_persist_and_change_nothing(data, four_epochs):
    from harness.training.loop import make_datasets, make_loader

    # Workers started once per loader, not re-forked every epoch.
    train_set, _, _ = make_datasets(TINY, data)
    cpu = torch.device("cpu")
    loader = make_loader(train_set, batch_size=4, device=cpu, num_workers=1, generator=torch.Generator())
    pids = []
    for epoch in (1, 2):
        loader.sampler.set_epoch(epoch)
        assert sum(b[0].shape[0] for b in loader) == len(train_set)
        pids.append([w.pid for w in loader._iterator._workers])
    assert pids[0] == pids[1]
    # Same seed, one loader worker: the losses and metrics of the in-process loader, also after a resume.
    straight, _, kept = four_epochs
    with_worker = fit(replace(TINY, epochs=4, num_workers=1), data, None, checkpoint_dir=kept / "epoch-2")
    np.testing.assert_array_equal(seeded(with_worker.history), seeded(straight.history))
