"""Segmentation networks: a plain dict registry and one constructor.

``build_model("unet", depth=4, base_channels=32)`` -> logits (B, num_classes, H, W). With deep
supervision (UNet++ only) a model in training mode returns a list of logits (last = full-depth head) and
in eval mode one tensor (the heads' average).
"""

from __future__ import annotations

from torch import nn

from harness.models.unet import NORMS, UNet, check_input_size
from harness.models.unetpp import UNetPlusPlus

MODELS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "unetpp": UNetPlusPlus,
}

__all__ = [
    "MODELS",
    "NORMS",
    "UNet",
    "UNetPlusPlus",
    "build_model",
    "check_input_size",
    "count_parameters",
    "flops_per_patch",
]


def build_model(
    arch: str,
    *,
    depth: int,
    base_channels: int,
    in_channels: int = 4,
    num_classes: int = 2,
    norm: str = "batch",
    deep_supervision: bool = False,
) -> nn.Module:
    """Build architecture ``arch`` (a key of ``MODELS``).

    Raises ValueError for an unknown architecture (listing the valid ones), a depth outside 1-6, a norm
    other than "batch"/"none", or deep supervision on an architecture without intermediate heads.
    """
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; valid architectures: {', '.join(sorted(MODELS))}")
    kwargs = dict(depth=depth, base_channels=base_channels, norm=norm)
    if deep_supervision:
        if arch != "unetpp":
            raise ValueError(f"deep_supervision is only available for 'unetpp', not {arch!r}")
        kwargs["deep_supervision"] = True
    return MODELS[arch](in_channels, num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_patch(model: nn.Module, patch_size: int = 384, in_channels: int = 4) -> int:
    """Forward FLOPs of one patch (one multiply-add = 2 FLOPs), counted by ``torch.utils.flop_counter``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.eval()(torch.zeros(1, in_channels, patch_size, patch_size))
    return int(counter.get_total_flops())
