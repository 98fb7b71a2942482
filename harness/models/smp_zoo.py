"""The architecture zoo from segmentation_models_pytorch (smp), built to the harness's builder contract.

Every builder here takes ``(in_channels, num_classes, *, depth, base_channels, norm, encoder)`` like the
paper-exact networks and returns an :class:`SmpNetwork`: the smp model with random initialisation
(``encoder_weights=None``: nothing is downloaded, and a 4-band Landsat input has no ImageNet weights
anyway), ``in_channels`` input bands and ``num_classes`` logits at the input's size.

How the harness's two shape knobs map onto smp:

* ``depth`` is smp's ``encoder_depth``, the number of encoder stages used (each halves the resolution,
  DeepLabV3+ keeps 1/16 at depth 5 through dilation). smp builds the encoder's unused stages anyway;
  :func:`_prune_unused_stages` deletes them, so that parameter counts are those of the network that
  runs and every parameter gets a gradient.
* ``base_channels`` sets the decoder width, scaled so that ``base_channels=16`` gives smp's defaults:
  U-Net / UNet++ / MA-Net decoder channels ``[16 * 2**(depth - 1), ..., 16]`` (smp: 256..16), FPN pyramid
  ``16 * base`` and segmentation ``8 * base`` channels (256 / 128), DeepLabV3+ and UPerNet decoder
  ``16 * base`` (256), Segformer ``16 * base`` (256). LinkNet's decoder follows its encoder's widths, so
  ``base_channels`` does not change it (its spec says ``uses_width=False``).

The encoder is chosen by name (``encoder``, one of the spec's ``encoders``); norm is always batch norm
(smp's encoders are built with it), so the specs offer only ``norm="batch"``.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.models.unet import check_architecture_args, check_input_size


class SmpNetwork(nn.Module):
    """An smp segmentation model behind the harness's input check and logits contract.

    smp refuses an input that is not a multiple of its encoder's output stride with a RuntimeError
    about "Wrong input shape"; the harness's networks raise a ValueError naming the depth instead, so
    a benchmark gets one message whatever the architecture.
    """

    def __init__(self, network: nn.Module, depth: int):
        super().__init__()
        self.network = network
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes, H, W)`` of ``x`` ``(B, bands, H, W)``, H and W multiples of the output stride."""
        stride = int(self.network.encoder.output_stride)
        if stride == 2**self.depth:
            check_input_size(x, self.depth)
        elif x.dim() == 4 and (x.shape[-2] % stride or x.shape[-1] % stride):
            raise ValueError(
                f"input height and width must be divisible by the encoder's output stride {stride} "
                f"(depth {self.depth}), got {x.shape[-2]}x{x.shape[-1]}; crop or pad the input"
            )
        return self.network(x)


def _prune_unused_stages(encoder: nn.Module, depth: int) -> None:
    """Delete the encoder stages that an ``encoder_depth=depth`` forward never runs.

    ResNet encoders run ``layer{k}`` (k = 1..4) from depth k + 1 on; Mix Transformer encoders run
    ``patch_embed{k}``, ``block{k}`` and ``norm{k}`` from depth k + 1 on. Their forwards test the depth
    before touching a stage, so deleting a stage they skip is safe (tests/models check that every
    remaining parameter gets a gradient).
    """
    for stage in range(depth, 5):
        for prefix in ("layer", "patch_embed", "block", "norm"):
            if hasattr(encoder, f"{prefix}{stage}"):
                delattr(encoder, f"{prefix}{stage}")
    if depth < 5 and hasattr(encoder, "fc"):  # the torchvision ResNet's classifier, never run by smp
        del encoder.fc


def _check(depth: int, base_channels: int, in_channels: int, num_classes: int, norm: str) -> None:
    check_architecture_args(
        depth=depth, base_channels=base_channels, in_channels=in_channels, num_classes=num_classes, norm=norm
    )
    if norm != "batch":
        raise ValueError(f"norm must be 'batch' for segmentation_models_pytorch networks, got {norm!r}")


def _build(cls_name: str, in_channels: int, num_classes: int, depth: int, encoder: str, **kwargs) -> SmpNetwork:
    import segmentation_models_pytorch as smp

    network = getattr(smp, cls_name)(
        encoder_name=encoder,
        encoder_weights=None,
        encoder_depth=depth,
        in_channels=in_channels,
        classes=num_classes,
        **kwargs,
    )
    _prune_unused_stages(network.encoder, depth)
    return SmpNetwork(network, depth)


def _halving_widths(base_channels: int, depth: int) -> list[int]:
    """Decoder widths from the deepest block up: base * 2**(depth - 1), ..., base."""
    return [base_channels * 2 ** (depth - 1 - i) for i in range(depth)]


def _u_shaped(cls_name: str, in_channels, num_classes, depth, base_channels, norm, encoder) -> SmpNetwork:
    """An smp decoder of U-Net's shape: one block per encoder stage, widths halving towards the output."""
    _check(depth, base_channels, in_channels, num_classes, norm)
    widths = _halving_widths(base_channels, depth)
    return _build(cls_name, in_channels, num_classes, depth, encoder, decoder_channels=widths)


def unet(in_channels, num_classes, *, depth, base_channels, norm="batch", encoder="resnet34"):
    """U-Net with a ResNet encoder (the study's "ResUnet")."""
    return _u_shaped("Unet", in_channels, num_classes, depth, base_channels, norm, encoder)


def unet_plus_plus(in_channels, num_classes, *, depth, base_channels, norm="batch", encoder="resnet34"):
    """UNet++ with a ResNet encoder (smp's UnetPlusPlus, no deep supervision heads)."""
    return _u_shaped("UnetPlusPlus", in_channels, num_classes, depth, base_channels, norm, encoder)


def manet(in_channels, num_classes, *, depth, base_channels, norm="batch", encoder="resnet34"):
    """MA-Net (Fan et al. 2020): position-wise and multi-scale attention blocks in a U-shaped decoder."""
    return _u_shaped("MAnet", in_channels, num_classes, depth, base_channels, norm, encoder)


def linknet(in_channels, num_classes, *, depth, base_channels, norm="batch", encoder="resnet34"):
    """LinkNet (Chaurasia & Culurciello 2017): additive skips, a decoder as wide as its encoder."""
    _check(depth, base_channels, in_channels, num_classes, norm)
    return _build("Linknet", in_channels, num_classes, depth, encoder)


def fpn(in_channels, num_classes, *, depth, base_channels, norm="batch", encoder="resnet34"):
    """Feature Pyramid Network (Lin et al. 2017) as a segmentation decoder (Kirillov et al.'s panoptic FPN)."""
    _check(depth, base_channels, in_channels, num_classes, norm)
    # smp's FPN head upsamples its stride-4 merge by 4, right for depth 5; at depth 4 and 3 the
    # deepest levels are missing and the merge sits at stride 2 and 1 of the output.
    return _build(
        "FPN",
        in_channels,
        num_classes,
        depth,
        encoder,
        decoder_pyramid_channels=16 * base_channels,
        decoder_segmentation_channels=8 * base_channels,
        upsampling=4 // 2 ** (5 - depth),
    )


def deeplabv3plus(in_channels, num_classes, *, depth, base_channels, norm="batch", encoder="resnet34"):
    """DeepLabV3+ (Chen et al. 2018): atrous spatial pyramid pooling and a low-level skip."""
    _check(depth, base_channels, in_channels, num_classes, norm)
    return _build("DeepLabV3Plus", in_channels, num_classes, depth, encoder, decoder_channels=16 * base_channels)


def upernet(in_channels, num_classes, *, depth, base_channels, norm="batch", encoder="resnet34"):
    """UPerNet (Xiao et al. 2018): a pyramid pooling module on an FPN."""
    _check(depth, base_channels, in_channels, num_classes, norm)
    return _build("UPerNet", in_channels, num_classes, depth, encoder, decoder_channels=16 * base_channels)


def segformer(in_channels, num_classes, *, depth, base_channels, norm="batch", encoder="mit_b0"):
    """SegFormer (Xie et al. 2021): a Mix Transformer encoder and an all-MLP decoder."""
    _check(depth, base_channels, in_channels, num_classes, norm)
    return _build(
        "Segformer", in_channels, num_classes, depth, encoder, decoder_segmentation_channels=16 * base_channels
    )
