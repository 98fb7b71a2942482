"""Cloud-Net (harness.models.cloudnet) against the authors' Keras code: parameter count, blocks, skips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.models import count_parameters
from harness.models.cloudnet import CloudNet, ContractingBlock, ExpandingBlock, improved_skip


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
    total = _conv(in_channels, 16, 3)  # conv1 = Conv2D(16, (3, 3), activation='relu')
    total += sum(_contr_arm(f) for f in (32, 64, 128, 256)) + _imprv_contr_arm(512) + _contr_arm(1024)  # bridge
    total += _conv_transpose(1024, 512) + _exp_path(512, convolutions=3)  # convT7, conv_block_exp_path3
    total += sum(_conv_transpose(2 * f, f) + _exp_path(f) for f in (256, 128, 64, 32))  # convT8..11
    return total + _conv(32, classes, 1)  # conv12


def test_the_port_has_the_authors_parameter_count():
    authors = CloudNet(4, 1, depth=5, base_channels=16, norm="batch")
    assert keras_trainable_parameters() == 36_448_673
    assert count_parameters(authors) == 36_448_673
    # Keras' "Total params" adds batch norm's moving mean and variance.
    moving = sum(b.numel() for name, b in authors.named_buffers() if name.endswith(("running_mean", "running_var")))
    assert count_parameters(authors) + moving == 36_465_793
    two_classes = CloudNet(4, 2, depth=5, base_channels=16)
    assert count_parameters(two_classes) == keras_trainable_parameters(classes=2) == 36_448_706


def test_contracting_block_adds_the_concatenated_input_shortcut():
    torch.manual_seed(0)
    block = ContractingBlock(8, norm="none").eval()
    assert count_parameters(block) == _contr_arm(8) - (_bn(8) + _bn(8) + _bn(4))  # the same less its batch norms
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        expected = torch.relu(block.second(block.first(x)) + torch.cat([x, block.squeeze(x)], dim=1))
        torch.testing.assert_close(block(x), expected)


def test_improved_contracting_block_adds_the_middle_shortcut():
    torch.manual_seed(0)
    block = ContractingBlock(8, norm="batch", improved=True).eval()
    assert count_parameters(block) == _imprv_contr_arm(8)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        x0 = block.second(block.first(x))  # the authors' x0
        expected = block.third(x0) + torch.cat([x, block.squeeze(x)], dim=1) + block.middle_shortcut(x0)
        torch.testing.assert_close(block(x), torch.relu(expected))


def test_bridge_drops_out_between_its_second_convolution_and_batch_norm():
    bridge = ContractingBlock(8, norm="batch", dropout=0.15)
    assert [type(m) for m in bridge.second] == [nn.Conv2d, nn.Dropout, nn.BatchNorm2d, nn.ReLU]
    assert bridge.second[1].p == 0.15


def test_improved_skip_repeats_and_pools_the_shallower_levels():
    level0, level1, level2 = torch.rand(1, 2, 8, 8), torch.rand(1, 4, 4, 4), torch.rand(1, 8, 2, 2)
    out = improved_skip([level0, level1], level2)
    # The authors: concatenate level 0 with itself 4 times and max-pool by 4, level 1 twice and by 2.
    by_hand = level2 + nn.functional.max_pool2d(torch.cat([level0] * 4, 1), 4)
    by_hand = by_hand + nn.functional.max_pool2d(torch.cat([level1] * 2, 1), 2)
    torch.testing.assert_close(out, torch.relu(by_hand))
    assert improved_skip([], level0) is level0  # up11 concatenates conv1 itself


def test_expanding_block_adds_encoder_features_and_the_up_sampled_map():
    torch.manual_seed(0)
    block = ExpandingBlock(4, norm="none", convolutions=3).eval()
    assert len([m for m in block.convs if isinstance(m, nn.Conv2d)]) == 3  # conv_block_exp_path3
    deeper, skip, own = torch.randn(1, 8, 3, 3), torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        up = block.up(deeper)
        expected = torch.relu(block.convs(torch.cat([up, skip], dim=1)) + own + up)  # up7 = [convT7, prevup7]
        torch.testing.assert_close(block(deeper, skip, own), expected)


@pytest.mark.parametrize("depth", [1, 2, 6])
def test_every_depth_keeps_the_input_size(depth):
    model = CloudNet(4, 2, depth=depth, base_channels=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 4, 64, 128)).shape == (1, 2, 64, 128)


def test_bad_arguments_raise_the_harness_messages():
    with pytest.raises(ValueError, match="depth must be an integer from 1 to 6"):
        CloudNet(4, 2, depth=7, base_channels=4)
    with pytest.raises(ValueError, match="base_channels must be a positive integer"):
        CloudNet(4, 2, depth=2, base_channels=0)
    with pytest.raises(ValueError, match="norm must be one of 'batch', 'none'"):
        CloudNet(4, 2, depth=2, base_channels=4, norm="layer")
    with pytest.raises(ValueError, match=r"divisible by 2\*\*depth = 8 \(depth 3\), got 36x32"):
        CloudNet(4, 2, depth=3, base_channels=4)(torch.randn(1, 4, 36, 32))


def test_norm_none_has_no_batch_norm():
    plain = CloudNet(4, 2, depth=2, base_channels=4, norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in CloudNet(4, 2, depth=2, base_channels=4).modules())
