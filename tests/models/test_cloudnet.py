"""Cloud-Net (harness.models.cloudnet) against the authors' Keras code: parameter count, blocks, skips."""

from __future__ import annotations

import torch
from torch import nn

from harness.models import build_model, count_parameters
from harness.models.cloudnet import CloudNet, ContractingBlock, improved_skip


# Trainable parameters of the authors' Keras layers (Cloud-Net/cloud_net_model.py): every Conv2D and
# Conv2DTranspose has a bias (Keras' default), BatchNormalization trains gamma and beta per channel.
def _conv(c_in, c_out, k):
    return (c_in * k * k + 1) * c_out


def _bn(c):
    return 2 * c


def _contr_arm(f):  # two 3x3 conv + BN, the 1x1 shortcut to f/2 + BN
    return _conv(f // 2, f, 3) + _bn(f) + _conv(f, f, 3) + _bn(f) + _conv(f // 2, f // 2, 1) + _bn(f // 2)


def _imprv_contr_arm(f):  # three 3x3 conv + BN, the 1x1 shortcut to f/2, the 1x1 from the middle conv
    return _contr_arm(f) + _conv(f, f, 3) + _bn(f) + _conv(f, f, 1) + _bn(f)


def _exp_path(f, convolutions=2):  # conv_block_exp_path(3): 2f -> f, then f -> f
    return _conv(2 * f, f, 3) + _bn(f) + (convolutions - 1) * (_conv(f, f, 3) + _bn(f))


def _conv_transpose(c_in, c_out):  # Conv2DTranspose(c_out, (2, 2))
    return (c_in * 4 + 1) * c_out


def keras_trainable_parameters(in_channels=4, classes=1):
    """model_arch(192, 192, 4, 1) layer by layer: stem, 6 contracting blocks, 5 expanding ones, the head."""
    total = _conv(in_channels, 16, 3)
    total += sum(_contr_arm(f) for f in (32, 64, 128, 256)) + _imprv_contr_arm(512) + _contr_arm(1024)  # bridge
    total += _conv_transpose(1024, 512) + _exp_path(512, convolutions=3)
    total += sum(_conv_transpose(2 * f, f) + _exp_path(f) for f in (256, 128, 64, 32))
    return total + _conv(32, classes, 1)


def test_the_port_has_the_authors_parameter_count():
    authors = CloudNet(4, 1, depth=5, base_channels=16, norm="batch")
    assert keras_trainable_parameters() == 36_448_673
    assert count_parameters(authors) == 36_448_673
    # Keras' "Total params" adds batch norm's moving mean and variance.
    moving = sum(b.numel() for name, b in authors.named_buffers() if name.endswith(("running_mean", "running_var")))
    assert count_parameters(authors) + moving == 36_465_793
    assert count_parameters(build_model("cloudnet", depth=5, base_channels=16)) == keras_trainable_parameters(classes=2)


def test_contracting_block_adds_the_concatenated_input_shortcut():
    torch.manual_seed(0)
    block = ContractingBlock(8, norm="none").eval()
    assert count_parameters(block) == _contr_arm(8) - (_bn(8) + _bn(8) + _bn(4))  # the same less its batch norms
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        expected = torch.relu(block.second(block.first(x)) + torch.cat([x, block.squeeze(x)], dim=1))
        torch.testing.assert_close(block(x), expected)


def test_improved_skip_repeats_and_pools_the_shallower_levels():
    level0, level1, level2 = torch.rand(1, 2, 8, 8), torch.rand(1, 4, 4, 4), torch.rand(1, 8, 2, 2)
    out = improved_skip([level0, level1], level2)
    # The authors: concatenate level 0 with itself 4 times and max-pool by 4, level 1 twice and by 2.
    by_hand = level2 + nn.functional.max_pool2d(torch.cat([level0] * 4, 1), 4)
    by_hand = by_hand + nn.functional.max_pool2d(torch.cat([level1] * 2, 1), 2)
    torch.testing.assert_close(out, torch.relu(by_hand))


def test_norm_none_has_no_batch_norm():
    plain = build_model("cloudnet", depth=2, base_channels=4, norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in build_model("cloudnet", depth=2, base_channels=4).modules())
