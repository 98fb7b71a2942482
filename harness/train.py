"""Training: ``fit(config, data, report)`` plus the loop functions it is made of. No Ray, no MLflow here.

One call of ``fit`` is one trial: it seeds everything, builds the model and the data loaders, trains for
``config["epochs"]`` epochs and after each one calls ``report(metrics, checkpoint_dir)`` with a
checkpoint of that epoch. ``fit(..., checkpoint_dir=D)`` resumes from ``D/checkpoint.pt``: on CPU,
N epochs + resume + M epochs gives exactly the losses and weights of N + M epochs in one go.

A Ray trainable is a thin wrapper (in ``harness.sweep``, the one module that imports Ray)::

    def report(metrics, directory):
        tune.report(metrics, checkpoint=Checkpoint.from_directory(directory) if directory else None)

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        fit(config, data, report)
    else:
        with checkpoint.as_directory() as directory:
            fit(config, data, report, checkpoint_dir=directory)

Checkpoints hold only tensors and plain Python values, so ``torch.load(path, weights_only=True)``
loads them (a checkpoint is data, not code).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from harness.metrics import ConfusionAccumulator, confusion_stats, per_image_counts
from harness.models import build_model

CHECKPOINT_FILENAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
LOSSES = ("ce", "jaccard", "dice", "ce+jaccard", "ce+dice")
NORMALISATIONS = ("scale", "standardise")
CLOUD = 1

#: Every key ``fit`` reads, with its default. Other keys in a config are ignored (a sweep may carry its own).
DEFAULT_CONFIG: dict[str, Any] = {
    "arch": "unet",
    "depth": 4,
    "base_channels": 32,
    "norm": "batch",
    "deep_supervision": False,
    "lr": 1e-4,
    "weight_decay": 0.0,
    "batch_size": 8,
    "epochs": 60,
    "loss": "ce",
    "augment": False,
    "normalisation": "scale",
    "seed": 0,
    "num_workers": 0,
    "device": "auto",
    "eval_batch_size": None,  # None: batch_size
    "deterministic": True,  # False: fastest cuDNN kernels, runs no longer repeat exactly on GPU
}
#: Keys that fix the network's shape: a checkpoint only resumes a config that agrees on them.
MODEL_KEYS = ("arch", "depth", "base_channels", "norm", "deep_supervision")

Report = Callable[[dict, "str | None"], Any]


@dataclass
class FitResult:
    """What ``fit`` returns: the trained model (on its device), per-epoch metrics, final status, wall time."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    status: str = "completed"
    seconds: float = 0.0
    #: (mean[4], std[4]) of the train split when normalisation is "standardise", else None.
    band_stats: tuple | None = None


# ----------------------------------------------------------------------------------------- configuration
def resolve_config(config: dict) -> dict:
    """Fill defaults, coerce types (a sweep may hand numpy scalars) and reject impossible values."""
    resolved = {**DEFAULT_CONFIG, **{k: v for k, v in config.items() if k in DEFAULT_CONFIG}}
    try:
        for key in ("depth", "base_channels", "batch_size", "epochs", "seed", "num_workers"):
            resolved[key] = int(resolved[key])
        for key in ("lr", "weight_decay"):
            resolved[key] = float(resolved[key])
        for key in ("arch", "norm", "loss", "normalisation", "device"):
            resolved[key] = str(resolved[key])
    except (TypeError, ValueError) as error:
        raise ValueError(f"bad training config value: {error}") from error
    for key in ("deep_supervision", "augment", "deterministic"):
        resolved[key] = bool(resolved[key])
    if resolved["eval_batch_size"] is None:
        resolved["eval_batch_size"] = resolved["batch_size"]
    resolved["eval_batch_size"] = int(resolved["eval_batch_size"])
    problems = []
    if resolved["loss"] not in LOSSES:
        problems.append(f"loss must be one of {', '.join(LOSSES)}, got {resolved['loss']!r}")
    if resolved["normalisation"] not in NORMALISATIONS:
        problems.append(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {resolved['normalisation']!r}")
    if not (resolved["device"] in ("auto", "cpu") or resolved["device"].startswith("cuda")):
        problems.append(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {resolved['device']!r}")
    for key in ("batch_size", "eval_batch_size", "epochs"):
        if resolved[key] < 1:
            problems.append(f"{key} must be at least 1, got {resolved[key]}")
    if not resolved["lr"] > 0:
        problems.append(f"lr must be positive, got {resolved['lr']}")
    if resolved["weight_decay"] < 0:
        problems.append(f"weight_decay must be non-negative, got {resolved['weight_decay']}")
    if resolved["num_workers"] < 0:
        problems.append(f"num_workers must be non-negative, got {resolved['num_workers']}")
    if problems:
        raise ValueError("bad training config:\n  " + "\n  ".join(problems))
    return resolved


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the GPU when there is one, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def model_from_config(config: dict) -> nn.Module:
    """The (untrained) network a training config describes."""
    config = resolve_config(config)
    return build_model(
        config["arch"],
        depth=config["depth"],
        base_channels=config["base_channels"],
        norm=config["norm"],
        deep_supervision=config["deep_supervision"],
    )


# ----------------------------------------------------------------------------------------------- seeding
def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive ``random``/numpy seeds from the worker's torch seed.

    The torch seed of a worker comes from the loader's generator, so workers repeat across runs.
    """
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


@contextmanager
def deterministic_algorithms(enabled: bool = True):
    """Deterministic kernels (warn where none exists) for the duration, then restore the settings.

    ``enabled=False`` lets cuDNN pick the fastest (possibly non-deterministic) kernels instead.
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    if enabled:
        # cuBLAS is only deterministic with a fixed workspace; must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]


def capture_rng_state(loader_generator: torch.Generator | None = None) -> dict:
    """Every random state training depends on, as tensors and plain lists (loadable with weights_only)."""
    version, internal, gauss_next = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "name": name,
            "keys": keys.tolist(),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def restore_rng_state(state: dict, loader_generator: torch.Generator | None = None) -> None:
    """Inverse of ``capture_rng_state``."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["name"],
            np.asarray(numpy["keys"], dtype=np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    # A checkpoint from a GPU run resumed on another machine: restore what matches, the rest stays seeded.
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


# ------------------------------------------------------------------------------------------------ losses
def cloud_probability(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probability of the cloud class, (B, H, W)."""
    return logits.float().softmax(dim=1)[:, CLOUD]


def soft_jaccard_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft IoU of the cloud probability with the mask, over the whole batch."""
    probability, target = cloud_probability(logits), (target == CLOUD).float()
    intersection = (probability * target).sum()
    union = probability.sum() + target.sum() - intersection
    return 1 - (intersection + smooth) / (union + smooth)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice (F1) of the cloud probability with the mask, over the whole batch."""
    probability, target = cloud_probability(logits), (target == CLOUD).float()
    intersection = (probability * target).sum()
    return 1 - (2 * intersection + smooth) / (probability.sum() + target.sum() + smooth)


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-mean cross-entropy over the classes (the study's loss)."""
    return F.cross_entropy(logits.float(), target)


def build_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Loss by name: "ce", "jaccard", "dice", or "ce+jaccard" / "ce+dice" (the plain sum)."""
    parts = {"ce": cross_entropy_loss, "jaccard": soft_jaccard_loss, "dice": soft_dice_loss}
    names = name.split("+")
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    if len(names) == 1:
        return parts[name]
    functions = [parts[n] for n in names]

    def combined(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(f(logits, target) for f in functions)

    return combined


def supervised_loss(outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor, loss_fn) -> torch.Tensor:
    """The loss of one output, or the mean over deep-supervision heads."""
    if isinstance(outputs, list | tuple):
        return torch.stack([loss_fn(output, target) for output in outputs]).mean()
    return loss_fn(outputs, target)


# ------------------------------------------------------------------------------------------------- loops
def _autocast(device: torch.device):
    # bf16 needs no loss scaling; CPU autocast would only slow the small test models down.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _images_to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    # channels_last on every device, matching the model (see prepare_model)
    return images.to(device, non_blocking=True, memory_format=torch.channels_last)


def _to_device(images: torch.Tensor, masks: torch.Tensor, device: torch.device):
    return _images_to_device(images, device), masks.to(device, non_blocking=True)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` in channels_last memory format.

    Faster convolutions everywhere: cuDNN's tensor-core kernels on CUDA, and oneDNN's on CPU, where
    channels_last trains the U-Nets here 1.1-1.3x faster and evaluates them about 2x faster than the
    default format (the argmax over classes of NCHW logits is slow there); benchmarks/perf/RESULTS.md.
    """
    return model.to(device, memory_format=torch.channels_last)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimiser: torch.optim.Optimizer,
    loss_fn: Callable,
    device: torch.device,
) -> dict:
    """One pass over ``loader``; returns {"loss": image-weighted mean loss, "images", "seconds"}.

    The running loss stays on the device: the only host sync is at the end of the epoch, where a
    NaN/inf from any batch shows up in the mean.
    """
    model.train()
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    images_seen = 0
    for images, masks in loader:
        images, masks = _to_device(images, masks, device)
        optimiser.zero_grad(set_to_none=True)
        with _autocast(device):
            outputs = model(images)
        loss = supervised_loss(outputs, masks, loss_fn)
        loss.backward()
        optimiser.step()
        loss_sum += loss.detach().double() * images.shape[0]
        images_seen += images.shape[0]
    mean_loss = loss_sum.item() / images_seen if images_seen else math.nan
    return {"loss": mean_loss, "images": images_seen, "seconds": time.perf_counter() - start}


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str,
    *,
    loss_fn: Callable = cross_entropy_loss,
    per_image: bool = False,
) -> dict:
    """Loss and pixel statistics of ``model`` over ``loader`` (argmax prediction, cloud = class 1).

    Returns {"loss", "images", "seconds", **confusion_stats(...)} and, with ``per_image``, also
    "per_image_counts" (N, 4) int64 (tp, fn, fp, tn) in loader order. Counts accumulate on the device.
    """
    device = resolve_device(device)
    # Outside inference mode: parameters moved inside it could no longer be trained.
    prepare_model(model, device).eval()
    start = time.perf_counter()
    accumulator = ConfusionAccumulator(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    images_seen = 0
    image_counts = []
    with torch.inference_mode():
        for images, masks in loader:
            images, masks = _to_device(images, masks, device)
            with _autocast(device):
                logits = model(images)
            logits = logits.float()
            loss_sum += loss_fn(logits, masks).double() * images.shape[0]
            pred = logits.argmax(dim=1)
            accumulator.update(pred, masks)
            if per_image:
                image_counts.append(per_image_counts(pred, masks))
            images_seen += images.shape[0]
        counts = accumulator.counts()
    result = {
        "loss": loss_sum.item() / images_seen if images_seen else math.nan,
        "images": images_seen,
        "seconds": time.perf_counter() - start,
        **confusion_stats(*counts),
    }
    if per_image:
        result["per_image_counts"] = (
            torch.cat(image_counts).cpu().numpy() if image_counts else np.zeros((0, 4), dtype=np.int64)
        )
    return result


def predict(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device | str,
    batch_size: int,
    *,
    threshold: float | None = None,
) -> np.ndarray:
    """Predicted masks (N, H, W) uint8 (1 = cloud) for every item of ``dataset``, in order.

    Items may be images or (image, mask) pairs. ``threshold=None`` takes the argmax; a float labels a
    pixel cloud when its softmax cloud probability exceeds it (38-Cloud's protocol uses 12/255).
    """
    device = resolve_device(device)
    prepare_model(model, device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, pin_memory=device.type == "cuda")
    masks = []
    with torch.inference_mode():
        for batch in loader:
            images = batch[0] if isinstance(batch, list | tuple) else batch
            images = _images_to_device(images, device)
            with _autocast(device):
                logits = model(images)
            pred = logits.argmax(dim=1) if threshold is None else cloud_probability(logits) > threshold
            masks.append(pred.to(torch.uint8).cpu())
    if not masks:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    return torch.cat(masks).numpy()


# ------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` (tensors and plain values only)."""
    torch.save(state, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The trained network stored in a checkpoint written by ``fit``, in eval mode on ``device``."""
    checkpoint = load_checkpoint(path)
    model = model_from_config(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    return prepare_model(model, resolve_device(device)).eval()


def _checkpoint_state(*, config, epoch, model, optimiser, history, loader_generator, band_stats) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        # Augmentation is seeded by (dataset seed, epoch); stored so a resume sets the same epoch.
        "augmentation_epoch": epoch,
        "config": dict(config),
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "history": [dict(entry) for entry in history],
        "rng": capture_rng_state(loader_generator),
        "band_stats": None if band_stats is None else [np.asarray(s, dtype=np.float64).tolist() for s in band_stats],
    }


def _restore_training_state(checkpoint: dict, model, optimiser, loader_generator) -> list[dict]:
    """Load weights, optimiser and RNG states from a checkpoint; returns its history (one entry per epoch)."""
    model.load_state_dict(checkpoint["model"])
    optimiser.load_state_dict(checkpoint["optimiser"])
    # Last: building the model and the datasets drew from the global generators.
    restore_rng_state(checkpoint["rng"], loader_generator)
    history = [dict(entry) for entry in checkpoint["history"]]
    if len(history) != checkpoint["epoch"]:
        raise ValueError(f"checkpoint of epoch {checkpoint['epoch']} holds {len(history)} history entries")
    return history


def _check_resumable(checkpoint: dict, config: dict, path: Path) -> None:
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a checkpoint of format {CHECKPOINT_FORMAT}")
    differing = [key for key in MODEL_KEYS if checkpoint["config"].get(key) != config[key]]
    if differing:
        details = ", ".join(f"{k}: {checkpoint['config'].get(k)!r} vs {config[k]!r}" for k in differing)
        raise ValueError(f"{path}: checkpoint is for a different network ({details})")


# -------------------------------------------------------------------------------------------------- data
def make_datasets(config: dict, data, band_stats=None):
    """(train, val) ``CloudPatchDataset``s of a ``PreparedData`` for a resolved config.

    ``band_stats`` (mean[4], std[4]) is computed over the train split for "standardise" unless given.
    Returns (train_dataset, val_dataset, band_stats).
    """
    from harness.data.dataset import CloudPatchDataset
    from harness.data.dataset import band_stats as compute_band_stats

    train_indices, val_indices = data.indices("train"), data.indices("val")
    if len(train_indices) == 0:
        raise ValueError(f"the train split of {data.cache_dir} is empty")
    if config["normalisation"] == "standardise" and band_stats is None:
        band_stats = compute_band_stats(data.cache_dir, train_indices)
    if config["normalisation"] != "standardise":
        band_stats = None
    common = {"normalisation": config["normalisation"], "band_stats": band_stats, "seed": config["seed"]}
    train = CloudPatchDataset(data.cache_dir, train_indices, augment=config["augment"], **common)
    val = CloudPatchDataset(data.cache_dir, val_indices, augment=False, **common)
    return train, val, band_stats


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A loader that shuffles with ``generator`` when one is given (training) and keeps order otherwise."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=generator is not None,
        generator=generator,
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers else None,
        pin_memory=device.type == "cuda",
    )


# --------------------------------------------------------------------------------------------------- fit
def _epoch_metrics(epoch: int, train: dict, val: dict | None, seconds: float, status: str) -> dict:
    val = val or {}
    return {
        "epoch": epoch,
        "train_loss": train["loss"],
        "val_loss": val.get("loss", math.nan),
        "val_accuracy": val.get("accuracy", math.nan),
        "val_iou": val.get("threat_score", math.nan),
        "val_precision": val.get("ppv", math.nan),
        "val_recall": val.get("tpr", math.nan),
        "val_f1": val.get("f1", math.nan),
        "epoch_seconds": seconds,
        "train_images_per_second": train["images"] / train["seconds"] if train["seconds"] > 0 else math.nan,
        "status": status,
    }


def _report_with_checkpoint(report: Report, metrics: dict, state: dict) -> None:
    directory = tempfile.mkdtemp(prefix="harness-checkpoint-")
    try:
        save_checkpoint(Path(directory) / CHECKPOINT_FILENAME, state)
        report(metrics, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def fit(config: dict, data, report: Report | None, checkpoint_dir: str | Path | None = None) -> FitResult:
    """Train one configuration on ``data`` (a ``PreparedData``): train split to learn, val split to score.

    After every epoch ``report(metrics, checkpoint_dir)`` is called (see ``_epoch_metrics`` for the keys;
    status "running", "completed" on the last epoch, or "diverged" -- then once, with no checkpoint, and
    training stops). ``checkpoint_dir``: resume from ``checkpoint_dir/checkpoint.pt`` when it exists.
    val_loss uses the training loss function, so train and val losses compare.
    """
    started = time.perf_counter()
    config = resolve_config(config)
    device = resolve_device(config["device"])
    report = report or (lambda metrics, directory: None)
    with deterministic_algorithms(config["deterministic"]):
        seed_everything(config["seed"])
        model = prepare_model(model_from_config(config), device)
        optimiser = torch.optim.Adam(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
        loss_fn = build_loss(config["loss"])
        loader_generator = torch.Generator().manual_seed(config["seed"])

        checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_FILENAME if checkpoint_dir is not None else None
        checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path and checkpoint_path.exists() else None
        stored_stats = None
        if checkpoint is not None:
            _check_resumable(checkpoint, config, checkpoint_path)
            stored_stats = checkpoint["band_stats"]
        train_set, val_set, band_stats = make_datasets(
            config, data, None if stored_stats is None else tuple(np.asarray(s) for s in stored_stats)
        )
        train_loader = make_loader(
            train_set,
            batch_size=config["batch_size"],
            device=device,
            num_workers=config["num_workers"],
            generator=loader_generator,
        )
        val_loader = make_loader(
            val_set, batch_size=config["eval_batch_size"], device=device, num_workers=config["num_workers"]
        )

        history: list[dict] = []
        if checkpoint is not None:
            history = _restore_training_state(checkpoint, model, optimiser, loader_generator)

        status = "completed"
        for epoch in range(len(history) + 1, config["epochs"] + 1):
            epoch_start = time.perf_counter()
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            train = train_one_epoch(model, train_loader, optimiser, loss_fn, device)
            # A non-finite training loss means NaN weights: validating them would only cost time.
            val = evaluate(model, val_loader, device, loss_fn=loss_fn) if math.isfinite(train["loss"]) else None
            diverged = val is None or (val["images"] > 0 and not math.isfinite(val["loss"]))
            status = "diverged" if diverged else "running" if epoch < config["epochs"] else "completed"
            metrics = _epoch_metrics(epoch, train, val, time.perf_counter() - epoch_start, status)
            history.append(metrics)
            if diverged:
                report(metrics, None)
                break
            state = _checkpoint_state(
                config=config,
                epoch=epoch,
                model=model,
                optimiser=optimiser,
                history=history,
                loader_generator=loader_generator,
                band_stats=band_stats,
            )
            _report_with_checkpoint(report, metrics, state)
    return FitResult(
        model=model, history=history, status=status, seconds=time.perf_counter() - started, band_stats=band_stats
    )
