"""Architectures: shapes at every depth, the UNet++ paper's parameter counts, errors, a tiny overfit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.metrics import confusion_counts, confusion_stats
from harness.models import MODELS, build_model, count_parameters

ARCHS = ("unet", "unetpp")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_output_shape_matches_input_at_every_depth(arch, depth):
    model = build_model(arch, depth=depth, base_channels=4).eval()
    x = torch.randn(2, 4, 32, 64)
    with torch.no_grad():
        assert model(x).shape == (2, 2, 32, 64)


def test_unetpp_deep_supervision_returns_heads_in_training_and_their_average_in_eval():
    torch.manual_seed(0)
    # norm="none": features do not depend on the mode, so eval's output can be compared with the heads.
    model = build_model("unetpp", depth=3, base_channels=4, num_classes=3, norm="none", deep_supervision=True)
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        heads = model.train()(x)
        out = model.eval()(x)
    assert isinstance(heads, list) and len(heads) == 3
    assert all(h.shape == (2, 3, 32, 32) for h in heads)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out, torch.stack(heads).mean(dim=0))


def test_unetpp_without_deep_supervision_returns_one_tensor_in_training():
    model = build_model("unetpp", depth=2, base_channels=4).train()
    assert model(torch.randn(2, 4, 16, 16)).shape == (2, 2, 16, 16)


def test_parameter_counts_match_unetpp_paper_table_1():
    # UNet++ paper (Zhou et al. 2018), Table 1: U-Net 7.76 M, UNet++ 9.04 M (with and without deep
    # supervision): depth 4, base 32 (32..512 channels), plain convolutions, 2x2 transposed-convolution
    # up-sampling. The harness defaults (4 input bands, 2 classes) reproduce them exactly; so do 1 or 3
    # inputs and 1 output (the paper's single-channel sigmoid head), rounded to 2 decimals in millions.
    counts = {
        "unet": count_parameters(build_model("unet", depth=4, base_channels=32, norm="none")),
        "unetpp": count_parameters(build_model("unetpp", depth=4, base_channels=32, norm="none")),
        "unetpp_ds": count_parameters(
            build_model("unetpp", depth=4, base_channels=32, norm="none", deep_supervision=True)
        ),
    }
    assert counts == {"unet": 7_760_418, "unetpp": 9_042_498, "unetpp_ds": 9_042_696}
    assert round(counts["unet"] / 1e6, 2) == 7.76
    assert round(counts["unetpp"] / 1e6, 2) == 9.04
    assert round(counts["unetpp_ds"] / 1e6, 2) == 9.04
    for in_channels in (1, 3):
        unet = build_model("unet", depth=4, base_channels=32, norm="none", in_channels=in_channels, num_classes=1)
        unetpp = build_model("unetpp", depth=4, base_channels=32, norm="none", in_channels=in_channels, num_classes=1)
        assert round(count_parameters(unet) / 1e6, 2) == 7.76
        assert round(count_parameters(unetpp) / 1e6, 2) == 9.04


def test_norm_none_has_no_batch_norm_and_batch_has_it():
    plain = build_model("unet", depth=2, base_channels=4, norm="none")
    normed = build_model("unet", depth=2, base_channels=4, norm="batch")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in normed.modules()) == 2 * (3 + 2)


def test_unknown_architecture_error_lists_valid_names():
    with pytest.raises(ValueError, match="unknown architecture 'segformer'") as info:
        build_model("segformer", depth=2, base_channels=4)
    for name in MODELS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0}, "depth must be an integer from 1 to 6"),
        ({"depth": 7}, "depth must be an integer from 1 to 6"),
        ({"depth": 2.0}, "depth must be an integer"),
        ({"norm": "layer"}, "norm must be one of 'batch', 'none'"),
        ({"base_channels": 0}, "base_channels must be a positive integer"),
    ],
)
@pytest.mark.parametrize("arch", ARCHS)
def test_bad_arguments_raise_clear_errors(arch, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(arch, **{"depth": 2, "base_channels": 4, **kwargs})


def test_deep_supervision_is_rejected_for_unet():
    with pytest.raises(ValueError, match="deep_supervision is only available for 'unetpp'"):
        build_model("unet", depth=2, base_channels=4, deep_supervision=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_input_not_divisible_by_two_to_the_depth_errors_clearly(arch):
    model = build_model(arch, depth=3, base_channels=4)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*depth = 8 \(depth 3\), got 36x32"):
        model(torch.randn(1, 4, 36, 32))


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_overfits_four_patches(arch):
    # A cheap constructed task: clouds are bright in every band; the net must learn the threshold
    # and shapes of 4 fixed 32 px patches.
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(4, 32, 32, dtype=torch.int64)
    for i in range(4):
        top, left = torch.randint(0, 20, (2,), generator=generator).tolist()
        masks[i, top : top + 12, left : left + 10] = 1
    images = 0.3 * torch.rand(4, 4, 32, 32, generator=generator) + 0.5 * masks[:, None].float()
    torch.manual_seed(0)
    model = build_model(arch, depth=2, base_channels=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(50):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(images), masks)
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        pred = model(images).argmax(dim=1)
    assert confusion_stats(*confusion_counts(pred, masks))["iou"] > 0.9
