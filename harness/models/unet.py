"""U-Net (Ronneberger et al. 2015) as configured in the seed study and the UNet++ paper.

Each level has two 3x3 convolutions (+ optional batch norm) + ReLU; 2x2 max-pooling goes down, feature
channels double per level; a 2x2 transposed convolution (stride 2) goes up and halves them, the result is
concatenated with the encoder skip and passed through two 3x3 convolutions; a 1x1 convolution gives the
logits. Padding keeps every feature map the size of its level, so the output is the input's size.

Parameter count: with ``norm="none"``, depth 4 and 32 base channels the network has 7,760,418
parameters with the harness defaults (4 input bands, 2 classes) -- the UNet++ paper's "7.76 M" (Table 1).
Every choice of 1/3/4 inputs and 1/2 outputs rounds to 7.76 M; the transposed-convolution up-sampling
is what matters (bilinear up-sampling would give 7.06 M). See ``tests/models/test_models.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.models.registry import NORMS

MIN_DEPTH, MAX_DEPTH = 1, 6


def check_architecture_args(*, depth: int, base_channels: int, in_channels: int, num_classes: int, norm: str):
    """Raise ValueError with a readable message for an impossible network configuration."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not MIN_DEPTH <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be an integer from {MIN_DEPTH} to {MAX_DEPTH} (down-samplings), got {depth!r}")
    for name, value in (
        ("base_channels", base_channels),
        ("in_channels", in_channels),
        ("num_classes", num_classes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(repr(n) for n in NORMS)}, got {norm!r}")


def check_input_size(x: torch.Tensor, depth: int) -> None:
    """Raise ValueError unless height and width of ``x`` are divisible by 2**depth.

    Without this check an odd feature map would be floored by max-pooling and the skip concatenation
    would fail later with an opaque size-mismatch message.
    """
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    factor = 2**depth
    if height % factor or width % factor:
        raise ValueError(
            f"input height and width must be divisible by 2**depth = {factor} (depth {depth}), "
            f"got {height}x{width}; crop or pad the input, or use a smaller depth"
        )


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each with optional batch norm and ReLU (the papers' H / 'standard unit')."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # A bias before batch norm is cancelled by the mean subtraction, so drop it there.
            layers.append(nn.Conv2d(c_in, out_channels, kernel_size=3, padding=1, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def up_sampler(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """2x2 transposed convolution with stride 2: doubles height and width."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)


def level_channels(base_channels: int, depth: int) -> list[int]:
    """Feature channels per level 0..depth, doubling each level."""
    return [base_channels * 2**level for level in range(depth + 1)]


class UNet(nn.Module):
    """U-Net with ``depth`` down-samplings; returns logits (B, num_classes, H, W).

    Args:
        in_channels: bands in the input (4 for red, green, blue, nir).
        num_classes: output channels (2: clear / cloud, scored by argmax).
        depth: number of 2x2 max-poolings (1-6); H and W must be divisible by 2**depth.
        base_channels: channels at the first level; level i has base_channels * 2**i.
        norm: "batch" (batch norm after each 3x3 convolution) or "none" (the paper's plain convolutions).
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_classes: int = 2,
        *,
        depth: int = 4,
        base_channels: int = 32,
        norm: str = "batch",
    ):
        super().__init__()
        check_architecture_args(
            depth=depth,
            base_channels=base_channels,
            in_channels=in_channels,
            num_classes=num_classes,
            norm=norm,
        )
        self.depth = depth
        channels = level_channels(base_channels, depth)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.encoders = nn.ModuleList(
            ConvBlock(in_channels if level == 0 else channels[level - 1], channels[level], norm)
            for level in range(depth + 1)
        )
        # Decoder index i rebuilds level i from level i + 1.
        self.ups = nn.ModuleList(up_sampler(channels[level + 1], channels[level]) for level in range(depth))
        self.decoders = nn.ModuleList(ConvBlock(2 * channels[level], channels[level], norm) for level in range(depth))
        self.head = nn.Conv2d(channels[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, H, W) of a 4-band batch (B, 4, H, W); H and W divisible by 2**depth."""
        check_input_size(x, self.depth)
        skips = []
        for level, encode in enumerate(self.encoders):
            x = encode(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for level in reversed(range(self.depth)):
            x = self.decoders[level](torch.cat([skips[level], self.ups[level](x)], dim=1))
        return self.head(x)
