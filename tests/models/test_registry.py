"""The model registry, and every registered architecture through it (timm's registry-driven tests).

Each test over ``list_models()`` runs for every architecture registered, so adding one to the registry adds
it to these tests: forward and backward at 64 px, output shape at every depth of its range, parameter and
FLOP counts, clear errors for impossible shapes, and a tiny overfit.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import ModelError
from harness.metrics import confusion_counts, confusion_stats
from harness.models import (
    ModelSpec,
    build_model,
    count_parameters,
    flops_per_patch,
    get_model_spec,
    list_models,
    register_model,
)
from harness.models import registry as registry_module
from tests.conftest import backward_nodes

ARCHS = tuple(list_models())


def small(arch: str, **kwargs) -> dict:
    """Build arguments with the cheapest encoder an architecture lists (its default otherwise)."""
    encoders = get_model_spec(arch).encoders
    cheapest = next((e for e in ("resnet18", "mit_b0") if e in encoders), "")
    return {"encoder": cheapest, **kwargs}


def low_depth(arch: str, depth: int = 2) -> int:
    """``depth``, raised to the lowest depth the architecture takes."""
    return max(depth, get_model_spec(arch).depth_range[0])


def test_registry_lists_the_built_in_architectures_with_their_specs():
    assert ARCHS[:2] == ("unet", "unetpp")
    spec = get_model_spec("unetpp")
    assert (spec.label, spec.deep_supervision, spec.depth_range) == ("UNet++", True, (1, 6))
    assert not get_model_spec("unet").deep_supervision


def test_importing_the_registry_loads_no_network_module():
    import subprocess
    import sys

    code = "import sys, harness.models; harness.models.list_models(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_register_model_adds_a_lazily_built_architecture_and_refuses_a_clash(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    register_model(ModelSpec(name="unet-copy", label="U-Net copy", family="U-Net", builder="harness.models.unet:UNet"))
    assert "unet-copy" in list_models()
    assert isinstance(build_model("unet-copy", depth=2, base_channels=4), nn.Module)
    with pytest.raises(ModelError, match="already registered"):
        register_model(ModelSpec(name="unet-copy", label="x", family="x", builder="harness.models.unetpp:UNetPlusPlus"))
    with pytest.raises(ModelError, match="module:attribute"):
        register_model(ModelSpec(name="bad", label="x", family="x", builder="harness.models.unet.UNet"))


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_and_backward_at_64_px(arch):
    torch.manual_seed(0)
    model = build_model(arch, **small(arch, depth=3, base_channels=4)).train()
    out = model(torch.randn(2, 4, 64, 64))
    out = out[-1] if isinstance(out, list) else out
    assert out.shape == (2, 2, 64, 64)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# Backward nodes of ops that torch.use_deterministic_algorithms documents as nondeterministic on CUDA (they
# raise or, with warn_only as the harness runs, only warn): an architecture using one would not repeat a
# seed's run on a GPU under train.deterministic: true.
CUDA_NONDETERMINISTIC = (
    "AvgPool3D", "AdaptiveAvgPool2D", "AdaptiveAvgPool3D", "AdaptiveMaxPool2D", "MaxPool3D", "FractionalMaxPool",
    "MaxUnpool", "UpsampleLinear1D", "UpsampleBilinear2D", "UpsampleBicubic2D", "UpsampleTrilinear3D",
    "ReflectionPad", "ReplicationPad", "NllLoss2D", "CtcLoss", "EmbeddingBag", "GridSampler", "ScatterAdd",
    "IndexAdd", "IndexPut",
)  # fmt: skip


@pytest.mark.parametrize("arch", ARCHS)
def test_the_spec_says_whether_a_training_step_is_deterministic_on_cuda(arch):
    # cuda_deterministic=True must mean no such op in the backward graph; False must name a real one
    # (the run's metadata then says that train.deterministic cannot repeat a GPU run of it exactly).
    from harness.training.losses import build_loss, supervised_loss

    spec = get_model_spec(arch)
    model = build_model(arch, **small(arch, depth=3, base_channels=4, deep_supervision=spec.deep_supervision))
    target = torch.randint(0, 2, (2, 64, 64))
    loss = supervised_loss(model.train()(torch.randn(2, 4, 64, 64)), target, build_loss("ce+jaccard"))
    found = sorted(n for n in backward_nodes(loss) if any(bad in n for bad in CUDA_NONDETERMINISTIC))
    assert (not found) == spec.cuda_deterministic, f"{arch}: {found}"


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_and_flop_counts_grow_with_width(arch):
    spec = get_model_spec(arch)
    narrow, wide = (build_model(arch, **small(arch, depth=low_depth(arch), base_channels=c)) for c in (4, 8))
    if spec.uses_width:
        assert 0 < count_parameters(narrow) < count_parameters(wide)
        assert 0 < flops_per_patch(narrow, patch_size=64) < flops_per_patch(wide, patch_size=64)
    else:  # the spec says base_channels sets no width: the network must not change with it
        assert count_parameters(narrow) == count_parameters(wide) > 0
    ratio = flops_per_patch(narrow, patch_size=128) / flops_per_patch(narrow, patch_size=64)
    if spec.family == "U-Net":  # fully convolutional: 4x the area, exactly 4x the FLOPs
        assert ratio == 4
    else:  # pooling to fixed bins costs the same at any size; attention grows with the square of the area
        assert 3.9 < ratio < 16


@pytest.mark.parametrize("arch", ARCHS)
def test_output_shape_matches_input_at_every_depth_of_its_range(arch):
    low, high = get_model_spec(arch).depth_range
    for depth in range(low, min(high, 5) + 1):
        model = build_model(arch, **small(arch, depth=depth, base_channels=4)).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 4, 32, 64)).shape == (2, 2, 32, 64)


def test_unknown_architecture_error_lists_valid_names():
    with pytest.raises(ModelError, match="unknown architecture 'hrcloudnet'") as info:
        build_model("hrcloudnet", depth=2, base_channels=4)
    for name in list_models():
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": "low - 1"}, "takes depth {low}..{high}, got {low_1}"),
        ({"depth": "high + 1"}, "takes depth {low}..{high}, got {high_1}"),
        ({"depth": "float"}, "depth must be an integer"),
        ({"norm": "layer"}, "norm must be one of 'batch', 'none'"),
        ({"base_channels": 0}, "base_channels must be a positive integer"),
        ({"encoder": "vgg11"}, "{arch} (takes encoder|has no encoder to choose)"),
    ],
)
@pytest.mark.parametrize("arch", ARCHS)
def test_bad_arguments_raise_clear_errors(arch, kwargs, message):
    low, high = get_model_spec(arch).depth_range
    depth = {"low - 1": low - 1, "high + 1": high + 1, "float": float(low)}
    kwargs = {k: depth.get(v, v) for k, v in kwargs.items()}
    message = message.format(arch=arch, low=low, high=high, low_1=low - 1, high_1=high + 1)
    with pytest.raises(ValueError, match=message):
        build_model(arch, **{"depth": low, "base_channels": 4, **kwargs})


@pytest.mark.parametrize("arch", [a for a in ARCHS if get_model_spec(a).norms != registry_module.NORMS])
def test_a_norm_the_spec_does_not_offer_is_refused(arch):
    with pytest.raises(ModelError, match=f"{arch} offers norm batch, got 'none'"):
        build_model(arch, depth=low_depth(arch), base_channels=4, norm="none")


@pytest.mark.parametrize("arch", ARCHS)
def test_the_spec_minimum_training_batch_is_the_real_one(arch):
    # min_batch 2 must be because a batch of one cannot train (batch norm of a globally pooled map);
    # min_batch 1 must mean a batch of one trains.
    model = build_model(arch, **small(arch, depth=3, base_channels=4)).train()
    if get_model_spec(arch).min_batch == 1:
        assert model(torch.randn(1, 4, 64, 64)).shape[-2:] == (64, 64)
    else:
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            model(torch.randn(1, 4, 64, 64))
        model(torch.randn(2, 4, 64, 64))


@pytest.mark.parametrize("arch", [a for a in ARCHS if get_model_spec(a).encoders])
def test_each_listed_encoder_builds_and_the_first_is_the_default(arch):
    spec = get_model_spec(arch)
    counts = {e: count_parameters(build_model(arch, depth=3, base_channels=4, encoder=e)) for e in spec.encoders}
    assert len(set(counts.values())) == len(counts)  # each encoder is a different network
    assert count_parameters(build_model(arch, depth=3, base_channels=4)) == counts[spec.encoders[0]]


def test_smp_encoders_lose_the_stages_their_depth_does_not_run():
    model = build_model("unet_resnet", depth=3, base_channels=4, encoder="resnet18")
    names = {name.split(".")[2] for name, _ in model.named_parameters() if name.startswith("network.encoder.")}
    assert {"layer1", "layer2"} <= names and not names & {"layer3", "layer4", "fc"}
    segformer = build_model("segformer", depth=3, base_channels=4, encoder="mit_b0")
    assert not any(
        n.startswith(("network.encoder.block3", "network.encoder.block4")) for n, _ in segformer.named_parameters()
    )


@pytest.mark.parametrize("arch", [a for a in ARCHS if not get_model_spec(a).deep_supervision])
def test_deep_supervision_is_rejected_where_the_spec_has_no_heads(arch):
    with pytest.raises(ModelError, match=f"has deep supervision heads, not '{arch}'"):
        build_model(arch, depth=low_depth(arch), base_channels=4, deep_supervision=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_input_not_divisible_by_two_to_the_depth_errors_clearly(arch):
    model = build_model(arch, **small(arch, depth=3, base_channels=4))
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
    model = build_model(arch, **small(arch, depth=low_depth(arch), base_channels=8))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    # Pyramid and transformer heads predict at 1/4 of the input and upsample: sharp 32 px rectangles
    # take them longer to fit (UPerNet: IoU 0.84 after 50 steps, 0.92 after 100).
    steps = 100 if get_model_spec(arch).family in ("pyramid", "transformer") else 50
    for _ in range(steps):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(images), masks)
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        pred = model(images).argmax(dim=1)
    assert confusion_stats(*confusion_counts(pred, masks))["iou"] > 0.9
