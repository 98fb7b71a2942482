"""The built-in networks (harness.models.unet, harness.models.unetpp): the UNet++ paper's parameter counts, heads."""

from __future__ import annotations

import torch
from torch import nn

from harness.models import build_model, count_parameters


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
