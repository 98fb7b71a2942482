"""Cloud-Net (Mohajerani & Saeedi 2019), the 38-Cloud authors' network, from their Keras code.

Ported block for block from ``Cloud-Net/cloud_net_model.py`` of
github.com/SorourMo/Cloud-Net-A-semantic-segmentation-CNN-for-cloud-detection ("Cloud-Net: An end-to-end
cloud detection algorithm for Landsat 8 imagery", IGARSS 2019). With ``w = 2 * base_channels`` (the authors:
base 16, so w = 32) and levels l = 0..depth of width ``w * 2**l``:

* a 3x3 stem convolution to ``base_channels`` with ReLU (no batch norm, as in their code);
* contracting arm blocks (``contr_arm``) at levels 0..depth-2: two 3x3 conv + BN + ReLU, plus a shortcut
  that concatenates the block's input with a 1x1 conv + BN + ReLU of it to half the width, added, ReLU;
  ``imprv_contr_arm`` at level depth-1 (three 3x3 convs, and a second 1x1 shortcut from the middle one);
  the ``bridge`` at level depth (``contr_arm`` with dropout 0.15 after its second convolution);
* each expanding level j: a 2x2 stride-2 transposed convolution from level j+1; the improved skip
  (``improve_ff_block``): each shallower level i's features repeated 2**(j-i) times along channels (the
  authors concatenate a tensor with itself) and max-pooled by 2**(j-i), summed with level j's, ReLU;
  both concatenated, two 3x3 conv + BN + ReLU (three at the deepest level, ``conv_block_exp_path3``), then
  added to level j's encoder features and the transposed convolution's output, ReLU;
* a 1x1 convolution to the logits (the authors' sigmoid is the loss's business here).

Their configuration (4 bands, 192 px, base 16, depth 5, one sigmoid output) has 36,448,673 trainable
parameters, 36,465,793 in all (Keras' ``Total params`` also counts batch norm's 17,120 moving means and
variances). ``tests/models/test_cloudnet.py`` derives that count from the Keras code layer by layer
(every ``Conv2D`` and ``Conv2DTranspose`` has a bias, Keras' default; batch norm trains a scale and a
shift per channel) and checks the port against it; with the harness's 2 output classes it is 36,448,706.
Two departures from the Keras code, neither changing a parameter: batch norm keeps torch's running-statistics
momentum (0.1, Keras 0.01) like the harness's other networks, and ``norm="none"`` drops the batch norms
(so Cloud-Net offers the registry's two norms).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.models.unet import check_architecture_args, check_input_size

MIN_DEPTH, MAX_DEPTH = 1, 6


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, norm: str) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)]
    if norm == "batch":
        # torch's batch norm defaults, as every network of the harness has, not Keras' (running statistics
        # updated at 0.01 per step): with those, a 50-step fit scored IoU 0.38 in eval mode, 0.99 with these.
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


class ContractingBlock(nn.Module):
    """``contr_arm`` / ``imprv_contr_arm`` / ``bridge``: convolutions plus a concatenated-input shortcut.

    The input has ``width // 2`` channels: concatenated with a 1x1 convolution of itself to ``width // 2``
    it matches the convolution path's ``width``, and the two are added. ``improved`` adds a third 3x3
    convolution and a 1x1 shortcut from the middle one; ``dropout`` follows the second convolution.
    """

    def __init__(self, width: int, norm: str, *, improved: bool = False, dropout: float = 0.0):
        super().__init__()
        c_in = width // 2
        self.first = nn.Sequential(*_conv_bn_relu(c_in, width, 3, norm))
        second = _conv_bn_relu(width, width, 3, norm)
        if dropout:  # the authors' bridge: Dropout between the second convolution and its batch norm
            second.insert(1, nn.Dropout(dropout))
        self.second = nn.Sequential(*second)
        self.third = nn.Sequential(*_conv_bn_relu(width, width, 3, norm)) if improved else None
        self.squeeze = nn.Sequential(*_conv_bn_relu(c_in, width // 2, 1, norm))
        self.middle_shortcut = nn.Sequential(*_conv_bn_relu(width, width, 1, norm)) if improved else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output at the input's resolution, ``width`` channels."""
        middle = self.second(self.first(x))
        out = self.third(middle) if self.third is not None else middle
        out = out + torch.cat([x, self.squeeze(x)], dim=1)
        if self.middle_shortcut is not None:
            out = out + self.middle_shortcut(middle)
        return torch.relu(out)


def improved_skip(shallower: list[torch.Tensor], own: torch.Tensor) -> torch.Tensor:
    """``improve_ff_block``: level j's features plus every shallower level's, repeated and max-pooled to fit.

    Level i (``shallower[i]``, ``j - i`` levels up) has ``2**(j-i)`` times fewer channels at ``2**(j-i)``
    times the resolution: the authors concatenate it with itself ``2**(j-i)`` times and max-pool it by
    ``2**(j-i)``. No parameters.
    """
    out = own
    j = len(shallower)
    for i, features in enumerate(shallower):
        factor = 2 ** (j - i)
        out = out + nn.functional.max_pool2d(features.repeat(1, factor, 1, 1), factor)
    return torch.relu(out)


class ExpandingBlock(nn.Module):
    """One expanding level: transposed convolution, the improved skip, convolutions, the two additions."""

    def __init__(self, width: int, norm: str, *, convolutions: int = 2):
        super().__init__()
        self.up = nn.ConvTranspose2d(2 * width, width, kernel_size=2, stride=2)
        layers = _conv_bn_relu(2 * width, width, 3, norm)
        for _ in range(convolutions - 1):
            layers += _conv_bn_relu(width, width, 3, norm)
        self.convs = nn.Sequential(*layers)

    def forward(self, deeper: torch.Tensor, skip: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """``deeper``: the level below's output; ``skip``: the improved skip; ``own``: this level's encoder features."""
        up = self.up(deeper)
        return torch.relu(self.convs(torch.cat([up, skip], dim=1)) + own + up)


class CloudNet(nn.Module):
    """Cloud-Net: logits ``(B, num_classes, H, W)``; H and W must be divisible by ``2**depth``."""

    def __init__(self, in_channels: int, num_classes: int, *, depth: int, base_channels: int, norm: str = "batch"):
        super().__init__()
        check_architecture_args(
            depth=depth, base_channels=base_channels, in_channels=in_channels, num_classes=num_classes, norm=norm
        )
        self.depth = depth
        widths = [2 * base_channels * 2**level for level in range(depth + 1)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, base_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.down = nn.ModuleList(
            [ContractingBlock(widths[level], norm) for level in range(depth - 1)]
            + [ContractingBlock(widths[depth - 1], norm, improved=True)]
        )
        self.bridge = ContractingBlock(widths[depth], norm, dropout=0.15)
        self.up = nn.ModuleList(
            [ExpandingBlock(widths[j], norm, convolutions=3 if j == depth - 1 else 2) for j in range(depth)]
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the input's resolution."""
        check_input_size(x, self.depth)
        features = []
        out = self.stem(x)
        for block in self.down:
            out = block(out)
            features.append(out)
            out = nn.functional.max_pool2d(out, 2)
        out = self.bridge(out)
        for j in reversed(range(self.depth)):
            out = self.up[j](out, improved_skip(features[:j], features[j]), features[j])
        return self.head(out)
