"""Segmentation networks: the model registry (no torch at import) and the built-in architectures.

``build_model("unet", depth=4, base_channels=32)`` -> logits (B, num_classes, H, W). With deep
supervision (UNet++ only) a model in training mode returns a list of logits (last = full-depth head) and
in eval mode one tensor (the heads' average). :func:`list_models` gives every registered key;
:func:`get_model_spec` its :class:`ModelSpec` (label, family, capabilities). The networks themselves
(:mod:`harness.models.unet`, :mod:`harness.models.unetpp`) are imported when one is built.
"""

from harness.models.cost import count_parameters, flops_per_patch, model_costs
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
        source="Ronneberger et al. 2015 (harness/models/unet.py)",
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
        source="Zhou et al. 2018 (harness/models/unetpp.py)",
    )
)
register_model(
    ModelSpec(
        name="cloudnet",
        label="Cloud-Net",
        family="U-Net",
        builder="harness.models.cloudnet:CloudNet",
        reference_shape=(5, 16),
        description="Cloud-Net (Mohajerani & Saeedi 2019), the 38-Cloud authors' network: improved skip paths",
        source="Mohajerani & Saeedi 2019 (harness/models/cloudnet.py, from the authors' Keras code)",
    )
)

# segmentation_models_pytorch's architectures (harness/models/smp_zoo.py), randomly initialised: ResNet
# encoders for the convolutional decoders, Mix Transformers for SegFormer; the default encoder first.
_RESNETS = ("resnet34", "resnet18", "resnet50")


def _smp(name: str, label: str, family: str, builder: str, description: str, **capabilities) -> ModelSpec:
    """An smp architecture's spec: batch norm only, smp's defaults as its reference shape.

    The reference shape is encoder depth 5 and decoder widths 256..16 (base 16); ResNet encoders and
    depths 3..5 unless ``capabilities`` say otherwise.
    """
    capabilities = {"depth_range": (3, 5), "encoders": _RESNETS, **capabilities}
    return ModelSpec(
        name=name,
        label=label,
        family=family,
        builder=f"harness.models.smp_zoo:{builder}",
        norms=("batch",),
        source="segmentation_models_pytorch",
        reference_shape=(5, 16),
        description=description,
        **capabilities,
    )


# cuda_deterministic=False: bilinear upsampling in the head (tests/models/test_registry.py checks the graph);
# min_batch=2: batch norm after a global pooling cannot train on one image.
for _spec in (
    _smp("unet_resnet", "U-Net (ResNet)", "U-Net", "unet",
         'U-Net with a ResNet encoder, the study\'s "ResUnet" (smp Unet)', depth_range=(1, 5)),
    _smp("unetpp_resnet", "UNet++ (ResNet)", "U-Net", "unet_plus_plus",
         "UNet++ with a ResNet encoder (smp UnetPlusPlus)", depth_range=(2, 5)),
    _smp("manet", "MA-Net", "attention U-Net", "manet",
         "MA-Net (Fan et al. 2020): attention blocks in a U-shaped decoder", depth_range=(1, 5)),
    _smp("linknet", "LinkNet", "U-Net", "linknet",
         "LinkNet (Chaurasia & Culurciello 2017): additive skips, decoder as wide as the encoder",
         depth_range=(1, 5), uses_width=False),
    _smp("fpn", "FPN", "pyramid", "fpn", "Feature Pyramid Network decoder (Kirillov et al. 2019)",
         cuda_deterministic=False),
    _smp("deeplabv3plus", "DeepLabV3+", "pyramid", "deeplabv3plus",
         "DeepLabV3+ (Chen et al. 2018): atrous spatial pyramid pooling", min_batch=2, cuda_deterministic=False),
    _smp("upernet", "UPerNet", "pyramid", "upernet", "UPerNet (Xiao et al. 2018): pyramid pooling on an FPN",
         min_batch=2, cuda_deterministic=False),
    _smp("segformer", "SegFormer", "transformer", "segformer",
         "SegFormer (Xie et al. 2021): Mix Transformer encoder, all-MLP decoder",
         encoders=("mit_b0", "mit_b1", "mit_b2"), cuda_deterministic=False),
):  # fmt: skip
    register_model(_spec)

__all__ = [
    "NORMS",
    "ModelSpec",
    "build_model",
    "count_parameters",
    "flops_per_patch",
    "get_model_spec",
    "list_models",
    "model_costs",
    "register_model",
    "shape_problem",
]
