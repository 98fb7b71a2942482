"""UNet++ (Zhou et al. 2018): a U-Net whose skips are nested, dense convolution pathways.

Node X(i, j) sits at level i (down-samplings) and column j (skip-pathway position):

    X(i, 0) = H(x)                                 for i = 0
    X(i, 0) = H(pool(X(i-1, 0)))                   for i > 0   (the encoder backbone)
    X(i, j) = H([X(i, 0), ..., X(i, j-1), U(X(i+1, j-1))])     for j > 0, i + j <= L

H is two 3x3 convolutions (+ optional batch norm) + ReLU with base_channels * 2**i outputs, U a 2x2
transposed convolution (stride 2) from level i+1's channels to level i's, one per node as in the
authors' reference implementation. 1x1 heads read X(0, 1..L) with deep supervision, only X(0, L)
without.

Output with deep supervision: in training mode the list of head logits [X(0,1), ..., X(0,L)] (the last
is the full-depth head; the loss averages over them); in eval mode the *average* of the head logits
(the paper's "accurate mode"). Without deep supervision: the logits of X(0, L).

Parameter count: with ``norm="none"``, depth 4 and 32 base channels the network has 9,042,498 parameters
with the harness defaults (4 input bands, 2 classes), 9,042,696 with deep supervision -- the UNet++
paper's "9.04 M" for both (Table 1); any of 1/3/4 inputs and 1/2 outputs also rounds to 9.04 M.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.models.unet import (
    ConvBlock,
    check_architecture_args,
    check_input_size,
    level_channels,
    up_sampler,
)


def node_name(level: int, column: int) -> str:
    """Key of node X(level, column) in the module dicts."""
    return f"x{level}_{column}"


class UNetPlusPlus(nn.Module):
    """UNet++ with ``depth`` down-samplings; logits (B, num_classes, H, W) (see the module docstring).

    Args:
        in_channels: bands in the input (4 for red, green, blue, nir).
        num_classes: output channels (2: clear / cloud, scored by argmax).
        depth: L, the number of 2x2 max-poolings (1-6); H and W must be divisible by 2**depth.
        base_channels: channels at level 0; level i has base_channels * 2**i.
        norm: "batch" or "none" (the paper's plain convolutions).
        deep_supervision: 1x1 heads on every X(0, j); training returns all of them, eval their average.
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_classes: int = 2,
        *,
        depth: int = 4,
        base_channels: int = 32,
        norm: str = "batch",
        deep_supervision: bool = False,
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
        self.deep_supervision = bool(deep_supervision)
        channels = level_channels(base_channels, depth)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.nodes = nn.ModuleDict()
        self.ups = nn.ModuleDict()
        for level in range(depth + 1):
            self.nodes[node_name(level, 0)] = ConvBlock(
                in_channels if level == 0 else channels[level - 1], channels[level], norm
            )
        for column in range(1, depth + 1):
            for level in range(depth + 1 - column):
                self.ups[node_name(level, column)] = up_sampler(channels[level + 1], channels[level])
                # column same-level predecessors plus the up-sampled node below.
                self.nodes[node_name(level, column)] = ConvBlock((column + 1) * channels[level], channels[level], norm)
        head_columns = range(1, depth + 1) if self.deep_supervision else [depth]
        self.heads = nn.ModuleDict(
            {node_name(0, column): nn.Conv2d(channels[0], num_classes, kernel_size=1) for column in head_columns}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits (B, num_classes, H, W); with deep supervision in training mode, one per head (last = full)."""
        check_input_size(x, self.depth)
        # rows[i] holds X(i, 0..j) computed so far.
        rows: list[list[torch.Tensor]] = []
        for level in range(self.depth + 1):
            x = self.nodes[node_name(level, 0)](x if level == 0 else self.pool(x))
            rows.append([x])
        for column in range(1, self.depth + 1):
            for level in range(self.depth + 1 - column):
                name = node_name(level, column)
                below = self.ups[name](rows[level + 1][column - 1])
                rows[level].append(self.nodes[name](torch.cat([*rows[level], below], dim=1)))
        logits = [head(rows[0][int(name.split("_")[1])]) for name, head in self.heads.items()]
        if not self.deep_supervision:
            return logits[0]
        if self.training:
            return logits
        return torch.stack(logits).mean(dim=0)
