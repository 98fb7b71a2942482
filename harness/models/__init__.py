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
_SMP = "segmentation_models_pytorch"
_SMP_DEFAULTS = (5, 16)  # smp's encoder_depth=5 and decoder widths (256..16, 256 for the pyramid heads)
for _spec in (
    ModelSpec(
        name="unet_resnet",
        label="U-Net (ResNet)",
        family="U-Net",
        builder="harness.models.smp_zoo:unet",
        depth_range=(1, 5),
        encoders=_RESNETS,
        norms=("batch",),
        source=_SMP,
        reference_shape=_SMP_DEFAULTS,
        description='U-Net with a ResNet encoder, the study\'s "ResUnet" (smp Unet)',
    ),
    ModelSpec(
        name="unetpp_resnet",
        label="UNet++ (ResNet)",
        family="U-Net",
        builder="harness.models.smp_zoo:unet_plus_plus",
        depth_range=(2, 5),
        encoders=_RESNETS,
        norms=("batch",),
        source=_SMP,
        reference_shape=_SMP_DEFAULTS,
        description="UNet++ with a ResNet encoder (smp UnetPlusPlus)",
    ),
    ModelSpec(
        name="manet",
        label="MA-Net",
        family="attention U-Net",
        builder="harness.models.smp_zoo:manet",
        depth_range=(1, 5),
        encoders=_RESNETS,
        norms=("batch",),
        source=_SMP,
        reference_shape=_SMP_DEFAULTS,
        description="MA-Net (Fan et al. 2020): attention blocks in a U-shaped decoder",
    ),
    ModelSpec(
        name="linknet",
        label="LinkNet",
        family="U-Net",
        builder="harness.models.smp_zoo:linknet",
        depth_range=(1, 5),
        encoders=_RESNETS,
        norms=("batch",),
        uses_width=False,
        source=_SMP,
        reference_shape=_SMP_DEFAULTS,
        description="LinkNet (Chaurasia & Culurciello 2017): additive skips, decoder as wide as the encoder",
    ),
    ModelSpec(
        name="fpn",
        label="FPN",
        family="pyramid",
        builder="harness.models.smp_zoo:fpn",
        depth_range=(3, 5),
        encoders=_RESNETS,
        norms=("batch",),
        cuda_deterministic=False,
        source=_SMP,
        reference_shape=_SMP_DEFAULTS,
        description="Feature Pyramid Network decoder (Kirillov et al. 2019)",
    ),
    ModelSpec(
        name="deeplabv3plus",
        label="DeepLabV3+",
        family="pyramid",
        builder="harness.models.smp_zoo:deeplabv3plus",
        depth_range=(3, 5),
        encoders=_RESNETS,
        norms=("batch",),
        min_batch=2,
        cuda_deterministic=False,
        source=_SMP,
        reference_shape=_SMP_DEFAULTS,
        description="DeepLabV3+ (Chen et al. 2018): atrous spatial pyramid pooling",
    ),
    ModelSpec(
        name="upernet",
        label="UPerNet",
        family="pyramid",
        builder="harness.models.smp_zoo:upernet",
        depth_range=(3, 5),
        encoders=_RESNETS,
        norms=("batch",),
        min_batch=2,
        cuda_deterministic=False,
        source=_SMP,
        reference_shape=_SMP_DEFAULTS,
        description="UPerNet (Xiao et al. 2018): pyramid pooling on an FPN",
    ),
    ModelSpec(
        name="segformer",
        label="SegFormer",
        family="transformer",
        builder="harness.models.smp_zoo:segformer",
        depth_range=(3, 5),
        encoders=("mit_b0", "mit_b1", "mit_b2"),
        norms=("batch",),
        cuda_deterministic=False,
        source=_SMP,
        reference_shape=_SMP_DEFAULTS,
        description="SegFormer (Xie et al. 2021): Mix Transformer encoder, all-MLP decoder",
    ),
):
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
