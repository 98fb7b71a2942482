"""Segmentation losses by name: the ``loss`` vocabulary is :data:`harness.training.loss_names.LOSSES`.

Every loss takes logits (B, 2, H, W) and an int64 mask (B, H, W) with cloud = class 1, and computes in
float32 whatever precision the network ran in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from harness.training.loss_names import LOSSES

CLOUD = 1

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    """Pixel-mean cross-entropy over the classes (the study's loss), equal to ``F.cross_entropy``.

    Written as log-softmax times a one-hot target rather than ``F.cross_entropy``: on CUDA, the latter's
    (B, C, H, W) path runs ``nll_loss2d``, whose forward sums with atomic adds and is flagged
    nondeterministic, so two runs of one seed would differ under ``deterministic: true``. Here every op
    (log_softmax, a comparison, a multiply, sums) has a deterministic kernel on every device.
    """
    log_probability = F.log_softmax(logits.float(), dim=1)
    # A comparison, not F.one_hot: that one checks the labels' range on CUDA, a host sync every step.
    classes = torch.arange(logits.shape[1], device=target.device).view(1, -1, *([1] * (target.dim() - 1)))
    one_hot = (target.unsqueeze(1) == classes).to(log_probability.dtype)
    return -(log_probability * one_hot).sum(dim=1).mean()


_PARTS: dict[str, LossFn] = {"ce": cross_entropy_loss, "jaccard": soft_jaccard_loss, "dice": soft_dice_loss}


def build_loss(name: str) -> LossFn:
    """Loss by name: "ce", "jaccard", "dice", or "ce+jaccard" / "ce+dice" (the plain sum)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    functions = [_PARTS[part] for part in name.split("+")]
    if len(functions) == 1:
        return functions[0]

    def combined(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(f(logits, target) for f in functions)

    return combined


def supervised_loss(outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """The loss of one output, or the mean over deep-supervision heads."""
    if isinstance(outputs, list | tuple):
        return torch.stack([loss_fn(output, target) for output in outputs]).mean()
    return loss_fn(outputs, target)
