"""Training: ``fit(config, data, report)`` plus the loop functions it is made of. No Ray, no MLflow here.

One call of ``fit`` is one trial: it seeds everything, builds the model and the data loaders from a
:class:`~harness.config.TrainConfig`, trains for ``config.epochs`` epochs and after each one calls
``report(metrics, checkpoint_dir)`` with a checkpoint of that epoch (:mod:`harness.training.checkpoints`).
``fit(..., checkpoint_dir=D)`` resumes from ``D/checkpoint.pt``: on CPU, N epochs + resume + M epochs
gives exactly the losses and weights of N + M epochs in one go. The Ray trainable that wraps it lives in
:mod:`harness.sweep.driver`.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from harness.config.train import PRECISIONS, TrainConfig
from harness.metrics import ConfusionAccumulator, confusion_stats, per_image_counts
from harness.models import build_model, get_model_spec
from harness.training.checkpoints import (
    CHECKPOINT_FILENAME,
    check_resumable,
    checkpoint_config,
    checkpoint_state,
    load_checkpoint,
    remove_orphaned_scratch,
    restore_training_state,
    save_checkpoint,
    scratch_dir,
    stored_band_stats,
)
from harness.training.losses import LossFn, build_loss, cloud_probability, cross_entropy_loss, supervised_loss
from harness.training.seeding import deterministic_algorithms, seed_everything, seed_worker

Report = Callable[[dict, "str | None"], Any]
log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What ``fit`` returns: the trained model (on its device), per-epoch metrics, final status, wall time."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    status: str = "completed"
    seconds: float = 0.0
    #: (mean[4], std[4]) of the train split when normalisation is "standardise", else None.
    band_stats: tuple | None = None
    #: The precision training ran in ("bf16", "fp16" or "fp32"), as ``train.precision`` resolved on its device.
    precision: str = "fp32"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the GPU when there is one, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def model_from_config(config: TrainConfig) -> nn.Module:
    """The (untrained) network a training config describes."""
    return build_model(
        config.arch,
        depth=config.depth,
        base_channels=config.base_channels,
        norm=config.norm,
        deep_supervision=config.deep_supervision,
        encoder=config.encoder,
    )


def model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The trained network stored in a checkpoint written by ``fit``, in eval mode on ``device``."""
    checkpoint = load_checkpoint(path)
    model = model_from_config(checkpoint_config(checkpoint))
    model.load_state_dict(checkpoint["model"])
    return prepare_model(model, resolve_device(device)).eval()


# --------------------------------------------------------------------------------------------- precision
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def autocast_dtype(
    device: torch.device | str, precision: str = "auto", *, bf16_supported: bool | None = None
) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``: bfloat16, float16, or None (float32, no autocast).

    "auto": bf16 on a CUDA device that has it (no loss scaling needed), fp16 on one that has not (T4,
    V100: bf16 there is emulated or fails; fp16 then trains with a gradient scaler), float32 on the CPU,
    where autocast would only slow the small models down. "bf16" / "fp16" / "fp32" are honoured on any
    device, except bf16 on a CUDA device without it. ``bf16_supported``: the device's answer, asked of
    torch when None (the argument lets the decision be tested without such a GPU).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if device.type == "cuda" and precision in ("auto", "bf16"):
        if bf16_supported is None:
            bf16_supported = torch.cuda.is_bf16_supported(including_emulation=False)
        if precision == "bf16" and not bf16_supported:
            raise ValueError(f"train.precision: bf16 requested but {device} has no bf16 support; use auto or fp16")
        return torch.bfloat16 if bf16_supported else torch.float16
    if precision == "auto":
        return None
    return _DTYPES[precision]


def precision_name(dtype: torch.dtype | None) -> str:
    """The name ("bf16", "fp16" or "fp32") of an autocast dtype (None = float32)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


# ------------------------------------------------------------------------------------------------- loops


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
    *,
    dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict:
    """One pass over ``loader``; returns {"loss": image-weighted mean loss, "images", "seconds"}.

    ``dtype``: the autocast dtype (:func:`autocast_dtype`; None = float32). ``scaler``: a gradient scaler
    for fp16, whose small gradients would otherwise underflow to zero. The running loss stays on the
    device: the only host sync is at the end of the epoch, where a NaN/inf from any batch shows up in the mean.
    """
    model.train()
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    images_seen = 0
    for images, masks in loader:
        images, masks = _to_device(images, masks, device)
        optimiser.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            outputs = model(images)
        loss = supervised_loss(outputs, masks, loss_fn)
        if scaler is None:
            loss.backward()
            optimiser.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimiser)  # skipped, and the scale lowered, when a gradient overflowed
            scaler.update()
        loss_sum += loss.detach().double() * images.shape[0]
        images_seen += images.shape[0]
    mean_loss = loss_sum.item() / images_seen if images_seen else math.nan
    return {"loss": mean_loss, "images": images_seen, "seconds": time.perf_counter() - start}


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str,
    *,
    loss_fn: LossFn = cross_entropy_loss,
    per_image: bool = False,
    on_predictions: Callable[[np.ndarray], None] | None = None,
    precision: str = "auto",
) -> dict:
    """Loss and pixel statistics of ``model`` over ``loader`` (argmax prediction, cloud = class 1).

    Returns {"loss", "images", "seconds", **confusion_stats(...)} and, with ``per_image``, also
    "per_image_counts" (N, 4) int64 (tp, fn, fp, tn) in loader order. Counts accumulate on the device.
    ``on_predictions`` receives each batch's predicted masks ((B, H, W) uint8 numpy, loader order), so
    a caller can keep what it needs (figure samples, scene mosaics) without holding every prediction.
    Validation and the final test use this one function: same precision (``precision``, as in
    :func:`autocast_dtype`), same memory format.
    """
    device = resolve_device(device)
    dtype = autocast_dtype(device, precision)
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
            with _autocast(device, dtype):
                logits = model(images)
            logits = logits.float()
            loss_sum += loss_fn(logits, masks).double() * images.shape[0]
            pred = logits.argmax(dim=1)
            accumulator.update(pred, masks)
            if per_image:
                image_counts.append(per_image_counts(pred, masks))
            if on_predictions is not None:
                on_predictions(pred.to(torch.uint8).cpu().numpy())
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
    num_workers: int = 0,
    precision: str = "auto",
) -> np.ndarray:
    """Predicted masks (N, H, W) uint8 (1 = cloud) for every item of ``dataset``, in order.

    Items may be images or (image, mask) pairs. ``threshold=None`` takes the argmax; a float labels a
    pixel cloud when its softmax cloud probability exceeds it (38-Cloud's protocol uses 12/255).
    ``num_workers`` loader processes read and decode the patches (as in training); ``precision`` as in
    :func:`autocast_dtype`.
    """
    device = resolve_device(device)
    dtype = autocast_dtype(device, precision)
    prepare_model(model, device).eval()
    loader = make_loader(dataset, batch_size=batch_size, device=device, num_workers=num_workers)
    masks = []
    with torch.inference_mode():
        for batch in loader:
            images = batch[0] if isinstance(batch, list | tuple) else batch
            images = _images_to_device(images, device)
            with _autocast(device, dtype):
                logits = model(images)
            pred = logits.argmax(dim=1) if threshold is None else cloud_probability(logits) > threshold
            masks.append(pred.to(torch.uint8).cpu())
    if not masks:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    return torch.cat(masks).numpy()


# -------------------------------------------------------------------------------------------------- data
def make_datasets(config: TrainConfig, data, band_stats=None):
    """(train, val) ``CloudPatchDataset``s of a ``PreparedData`` for a training config.

    ``band_stats`` (mean[4], std[4]) is computed over the train split for "standardise" unless given.
    Returns (train_dataset, val_dataset, band_stats).
    """
    from harness.data.dataset import CloudPatchDataset
    from harness.data.dataset import band_stats as compute_band_stats

    train_indices, val_indices = data.indices("train"), data.indices("val")
    if len(train_indices) == 0:
        raise ValueError(f"the train split of {data.cache_dir} is empty")
    if config.normalisation == "standardise" and band_stats is None:
        band_stats = compute_band_stats(data.cache_dir, train_indices)
    if config.normalisation != "standardise":
        band_stats = None
    common = {"normalisation": config.normalisation, "band_stats": band_stats, "seed": config.seed}
    train = CloudPatchDataset(data.cache_dir, train_indices, augment=config.augment, **common)
    val = CloudPatchDataset(data.cache_dir, val_indices, augment=False, **common)
    return train, val, band_stats


def make_eval_dataset(config: TrainConfig, data, split: str, band_stats=None):
    """The un-augmented dataset of ``split`` scaled as training was (``band_stats`` from ``fit``)."""
    from harness.data.dataset import CloudPatchDataset

    return CloudPatchDataset(
        data.cache_dir,
        data.indices(split),
        normalisation=config.normalisation,
        band_stats=band_stats if config.normalisation == "standardise" else None,
        seed=config.seed,
        augment=False,
    )


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
    min_batch: int = 1,
) -> DataLoader:
    """A loader that shuffles with ``generator`` when one is given (training) and keeps order otherwise.

    Shuffling is an :class:`~harness.data.dataset.EpochShuffle` (call ``loader.sampler.set_epoch`` before
    each epoch): its keys carry the epoch, so the ``num_workers`` loader processes can persist across
    epochs (started once per loader, not re-forked every epoch) and still augment for the right one.
    The workers' base seed comes from a generator of its own, seeded from ``generator``'s seed, so the
    shuffle order is the same with any number of workers and after a resume. ``min_batch`` (training):
    a last batch smaller than it is dropped (batch norm after a global pooling cannot train on one image).
    """
    from harness.data.dataset import CloudPatchDataset, EpochShuffle

    keyed = isinstance(dataset, CloudPatchDataset)  # other datasets (a Subset, a user's) take plain indices
    sampler = EpochShuffle(len(dataset), generator, keyed=keyed) if generator is not None else None
    worker_seeds = torch.Generator().manual_seed(generator.initial_seed() if generator is not None else 0)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=worker_seeds,
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers else None,
        persistent_workers=num_workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=0 < len(dataset) % batch_size < min_batch,
    )


# --------------------------------------------------------------------------------------------------- fit
def _epoch_metrics(
    epoch: int, train: dict, val: dict | None, seconds: float, status: str, *, device: torch.device, precision: str
) -> dict:
    val = val or {}
    return {
        "epoch": epoch,
        "train_loss": train["loss"],
        "val_loss": val.get("loss", math.nan),
        "val_accuracy": val.get("accuracy", math.nan),
        "val_iou": val.get("iou", math.nan),
        "val_precision": val.get("ppv", math.nan),
        "val_recall": val.get("tpr", math.nan),
        "val_f1": val.get("f1", math.nan),
        "epoch_seconds": seconds,
        "train_images_per_second": train["images"] / train["seconds"] if train["seconds"] > 0 else math.nan,
        "status": status,
        # Where and how it ran: "auto" resolved (a Ray task given no GPU trains on the CPU; bf16 or fp16).
        "device": str(device),
        "precision": precision,
    }


def _report_with_checkpoint(report: Report, metrics: dict, state: dict) -> None:
    directory = scratch_dir()
    try:
        save_checkpoint(Path(directory) / CHECKPOINT_FILENAME, state)
        report(metrics, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def fit(config: TrainConfig, data, report: Report | None, checkpoint_dir: str | Path | None = None) -> FitResult:
    """Train one configuration on ``data`` (a ``PreparedData``): train split to learn, val split to score.

    After every epoch ``report(metrics, checkpoint_dir)`` is called (see ``_epoch_metrics`` for the keys;
    status "running", "completed" on the last epoch, or "diverged" -- then once, with no checkpoint, and
    training stops). ``checkpoint_dir``: resume from ``checkpoint_dir/checkpoint.pt`` when it exists.
    val_loss uses the training loss function, so train and val losses compare. ``config.precision`` is
    resolved on the device (:func:`autocast_dtype`); fp16 trains with a gradient scaler, checkpointed with
    the weights. Validation runs in the same precision.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"fit needs a TrainConfig, got {type(config).__name__} (use harness.config.from_flat)")
    started = time.perf_counter()
    remove_orphaned_scratch()
    device = resolve_device(config.device)
    dtype = autocast_dtype(device, config.precision)
    precision = precision_name(dtype)
    log.info("training %s on %s in %s", config.arch, device, precision)
    report = report or (lambda metrics, directory: None)
    with deterministic_algorithms(config.deterministic):
        seed_everything(config.seed)
        model = prepare_model(model_from_config(config), device)
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        loss_fn = build_loss(config.loss)
        # fp16's narrow range loses small gradients to underflow without scaling; bf16 and fp32 need none.
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        loader_generator = torch.Generator().manual_seed(config.seed)

        checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_FILENAME if checkpoint_dir is not None else None
        checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path and checkpoint_path.exists() else None
        if checkpoint is not None:
            check_resumable(checkpoint, config, checkpoint_path)
        train_set, val_set, band_stats = make_datasets(
            config, data, stored_band_stats(checkpoint) if checkpoint is not None else None
        )
        train_loader = make_loader(
            train_set,
            batch_size=config.batch_size,
            device=device,
            num_workers=config.num_workers,
            generator=loader_generator,
            min_batch=get_model_spec(config.arch).min_batch,
        )
        val_loader = make_loader(
            val_set, batch_size=config.eval_batch_size, device=device, num_workers=config.num_workers
        )

        history: list[dict] = []
        if checkpoint is not None:
            history = restore_training_state(checkpoint, model, optimiser, loader_generator, scaler=scaler)

        status = "completed"
        for epoch in range(len(history) + 1, config.epochs + 1):
            epoch_start = time.perf_counter()
            train_loader.sampler.set_epoch(epoch)
            train = train_one_epoch(model, train_loader, optimiser, loss_fn, device, dtype=dtype, scaler=scaler)
            # A non-finite training loss means NaN weights: validating them would only cost time.
            finite = math.isfinite(train["loss"])
            val = evaluate(model, val_loader, device, loss_fn=loss_fn, precision=precision) if finite else None
            diverged = val is None or (val["images"] > 0 and not math.isfinite(val["loss"]))
            status = "diverged" if diverged else "running" if epoch < config.epochs else "completed"
            seconds = time.perf_counter() - epoch_start
            metrics = _epoch_metrics(epoch, train, val, seconds, status, device=device, precision=precision)
            history.append(metrics)
            if diverged:
                report(metrics, None)
                break
            state = checkpoint_state(
                config=config,
                epoch=epoch,
                model=model,
                optimiser=optimiser,
                history=history,
                loader_generator=loader_generator,
                band_stats=band_stats,
                scaler=scaler,
            )
            _report_with_checkpoint(report, metrics, state)
    return FitResult(
        model=model,
        history=history,
        status=status,
        seconds=time.perf_counter() - started,
        band_stats=band_stats,
        precision=precision,
    )
