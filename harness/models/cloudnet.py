"""Cloud-Net (Mohajerani & Saeedi 2019), the 38-Cloud authors' network, from their Keras code.

Ported block for block from ``Cloud-Net/cloud_net_model.py`` (``model_arch``) of
github.com/SorourMo/Cloud-Net-A-semantic-segmentation-CNN-for-cloud-detection (commit 7784ffa; "Cloud-Net: An
end-to-end cloud detection algorithm for Landsat 8 imagery", IGARSS 2019). With ``w = 2 * base_channels`` (the
authors: base 16, so w = 32) and levels l = 0..depth of width ``w * 2**l``:

* a 3x3 stem convolution to ``base_channels`` with ReLU (no batch norm, as in their code);
* contracting arm blocks (``contr_arm``) at levels 0..depth-2: two 3x3 conv + BN + ReLU, plus a shortcut
  that concatenates the block's input with a 1x1 conv + BN + ReLU of it to half the width, added, ReLU;
  ``imprv_contr_arm`` at level depth-1 (three 3x3 convs, and a second 1x1 shortcut from the middle one);
  the ``bridge`` at level depth (``contr_arm`` with dropout 0.15 after its second convolution);
  a 2x2 max-pooling between levels;
* each expanding level j: a 2x2 stride-2 transposed convolution from level j+1 (``Conv2DTranspose``); the
  improved skip (``improve_ff_block1..4``): each shallower level i's features repeated 2**(j-i) times along
  channels (the authors concatenate a tensor with itself) and max-pooled by 2**(j-i), summed with level j's,
  ReLU (level 0 has no shallower level: its skip is its features, as the authors' ``up11``); both
  concatenated, two 3x3 conv + BN + ReLU (``conv_block_exp_path``; three at the deepest level,
  ``conv_block_exp_path3``), then added to level j's encoder features and the transposed convolution's
  output, ReLU (``add_block_exp_path``);
* a 1x1 convolution to the logits (the authors' sigmoid is the loss's business here).

``depth`` is the number of max-poolings, 1..6 (the authors: 5); the blocks keep their roles at every depth
(the deepest contracting level is the improved arm, the bridge below it, three convolutions at the deepest
expanding level).

Parameter count of the authors' configuration, ``model_arch(192, 192, 4, 1)`` (4 bands, base 16, depth 5, one
sigmoid output). Every ``Conv2D`` / ``Conv2DTranspose`` has a bias (Keras' default): a k x k convolution from
c to c' has ``(c*k*k + 1) * c'`` weights; batch norm trains a scale and a shift per channel. For a width f:

* ``contr_arm(f)``: 3x3 f/2->f, 3x3 f->f, 1x1 f/2->f/2, batch norm on 2.5 f channels: 13.75 f² + 7.5 f;
  f = 32, 64, 128, 256: 14,320 + 56,800 + 226,240 + 903,040 = 1,200,400;
* ``imprv_contr_arm(512)``: ``contr_arm(512)`` 3,608,320 + a 3x3 512->512 + BN 2,360,832 + a 1x1 512->512 +
  BN 263,680 = 6,232,832;
* ``bridge(1024)``: as ``contr_arm(1024)``, dropout has none: 14,425,600;
* the deepest expanding level (512): transposed 2x2 1024->512 2,097,664 + 3x3 1024->512 + BN 4,720,128 +
  2 x (3x3 512->512 + BN) 4,721,664 = 11,539,456;
* the other expanding levels f (transposed 2x2 2f->f, 3x3 2f->f, 3x3 f->f, 2 BN): 35 f² + 7 f;
  f = 256, 128, 64, 32: 2,295,552 + 574,336 + 143,808 + 36,064 = 3,049,760;
* the stem (3x3 4->16) 592 and the head (1x1 32->1) 33; the skips, poolings and additions have none.

In all 592 + 1,200,400 + 6,232,832 + 14,425,600 + 11,539,456 + 3,049,760 + 33 = **36,448,673** trainable
parameters, which this port has at ``CloudNet(4, 1, depth=5, base_channels=16)``; Keras' ``Total params`` would
add batch norm's moving means and variances (2 x 8,560 channels = 17,120): 36,465,793. With the harness's 2
output classes the head has 66 and the network 36,448,706 (74.6 GFLOPs per 384 px patch).
``tests/models/test_cloudnet.py`` repeats the derivation layer by layer and checks the port against it.

Departures from the Keras code, none changing a parameter count: batch norm keeps torch's defaults (running
statistics momentum 0.1 and eps 1e-5; Keras: 0.01 and 1e-3) like the harness's other networks; weights start
from torch's default initialisation (Keras: Glorot-uniform kernels, zero biases); the network gives logits
(no sigmoid), so it takes ``num_classes`` outputs scored by the harness's losses; and ``norm="none"`` drops the
batch norms (so Cloud-Net offers the registry's two norms).
"""

from __future__ import annotations

import torch
from torch import nn

# The depth range (max-poolings) is U-Net's, which check_architecture_args enforces: every block generalises to
# any number of levels, and at depth 1 the one contracting level is the improved arm.
from harness.models.unet import MAX_DEPTH, MIN_DEPTH, check_architecture_args, check_input_size

__all__ = ["MAX_DEPTH", "MIN_DEPTH", "CloudNet", "ContractingBlock", "ExpandingBlock", "improved_skip"]


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, norm: str) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)]
    if norm == "batch":
        # torch's batch norm defaults, as every network of the harness has, not Keras' (running statistics
        # updated at 0.01 per step): with those, the registry's 50-step overfit of 4 patches (depth 2, base 8)
        # scored IoU 0.66 in eval mode, 1.0 with these -- the running statistics lag the training ones.
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
    ``2**(j-i)``. No parameters. ``own`` alone (level 0) is returned as it is.
    """
    if not shallower:
        # Level 0: the authors concatenate conv1 itself (already a ReLU's output) with the up-sampled map.
        return own
    out = own
    j = len(shallower)
    for i, features in enumerate(shallower):
        factor = 2 ** (j - i)
        # Pooling acts per channel, so pooling first and then tiling the channels is the authors' function
        # (values and gradients) without their full-resolution copy (16 x level 0's channels at depth 5).
        out = out + nn.functional.max_pool2d(features, factor).repeat(1, factor, 1, 1)
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
    """Cloud-Net: logits ``(B, num_classes, H, W)``; H and W must be divisible by ``2**depth``.

    Args:
        in_channels: bands in the input (the authors: 4, red, green, blue, nir).
        num_classes: output channels (the authors: 1 sigmoid output; the harness: 2, scored by argmax).
        depth: number of 2x2 max-poolings, 1-6 (the authors: 5).
        base_channels: the stem's width (the authors: 16); contracting level l has ``2 * base_channels * 2**l``.
        norm: "batch" (the authors' batch norm after every convolution but the stem and the head) or "none".
    """

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
