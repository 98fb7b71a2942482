"""Segmentation networks: the model registry (no torch at import) and the built-in architectures.

``build_model("unet", depth=4, base_channels=32)`` -> logits (B, num_classes, H, W). With deep
supervision (UNet++ only) a model in training mode returns a list of logits (last = full-depth head) and
in eval mode one tensor (the heads' average). :func:`list_models` gives every registered key;
:func:`get_model_spec` its :class:`ModelSpec` (label, family, capabilities). The networks themselves
(:mod:`harness.models.unet`, :mod:`harness.models.unetpp`) are imported when one is built.
"""

from harness.models.cost import count_parameters, flops_per_patch
from harness.models.registry import (
    NORMS,
    ModelSpec,
    build_model,
    get_model_spec,
    list_models,
    register_model,
    shape_problem,
)

register_model(
    ModelSpec(
        name="unet",
        label="U-Net",
        family="U-Net",
        builder="harness.models.unet:UNet",
        description="U-Net (Ronneberger et al. 2015) as in the seed study; 7.76 M parameters at depth 4, width 32",
    )
)
register_model(
    ModelSpec(
        name="unetpp",
        label="UNet++",
        family="U-Net",
        builder="harness.models.unetpp:UNetPlusPlus",
        deep_supervision=True,
        description="UNet++ (Zhou et al. 2018): nested dense skip paths, optional deep supervision",
    )
)

__all__ = [
    "NORMS",
    "ModelSpec",
    "build_model",
    "count_parameters",
    "flops_per_patch",
    "get_model_spec",
    "list_models",
    "register_model",
    "shape_problem",
]
