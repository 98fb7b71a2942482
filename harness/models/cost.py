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


def model_costs(arch: str, *, patch_size: int = 384, in_channels: int = 4, num_classes: int = 2) -> dict[str, Any]:
    """Name, label, family, source, parameters and GFLOPs per patch of ``arch`` at its spec's reference shape.

    The reference shape is the published configuration (``ModelSpec.reference_shape``, the default
    encoder); ``cloudmask models`` prints one row of these per registered architecture.
    """
    from harness.models.registry import build_model, get_model_spec

    spec = get_model_spec(arch)
    depth, width = spec.reference_shape
    depth = min(max(depth, spec.depth_range[0]), spec.depth_range[1])
    model = build_model(arch, depth=depth, base_channels=width, in_channels=in_channels, num_classes=num_classes)
    shape = f"depth {depth}" + (f", width {width}" if spec.uses_width else "")
    if spec.encoders:
        shape += f", {spec.encoders[0]}"
    return {
        "name": arch,
        "label": spec.label,
        "family": spec.family,
        "reference": shape,
        "encoders": ", ".join(spec.encoders) or "-",
        "params_m": count_parameters(model) / 1e6,
        "gflops": flops_per_patch(model, patch_size, in_channels) / 1e9,
        "source": spec.source,
    }
