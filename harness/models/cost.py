"""What a network costs: its parameter count and its forward FLOPs per patch (torch imported when called)."""

from __future__ import annotations

from typing import Any


def count_parameters(model: Any) -> int:
    """Number of trainable parameters of a ``torch.nn.Module``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_patch(model: Any, patch_size: int = 384, in_channels: int = 4) -> int:
    """Forward FLOPs of one patch (one multiply-add = 2 FLOPs), counted by ``torch.utils.flop_counter``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.eval()(torch.zeros(1, in_channels, patch_size, patch_size))
    return int(counter.get_total_flops())
