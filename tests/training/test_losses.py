"""Losses: the soft losses agree with the hard statistics for confident logits; names are checked."""

import pytest
import torch

from harness.metrics import confusion_counts, confusion_stats
from harness.training.losses import LOSSES, build_loss, soft_dice_loss, soft_jaccard_loss, supervised_loss
from tests.conftest import backward_nodes


def test_soft_losses_match_hard_iou_and_dice_for_confident_logits():
    target = torch.tensor([[[1, 1, 0, 0], [1, 0, 0, 0]]])
    pred = torch.tensor([[[1, 0, 0, 0], [1, 1, 0, 0]]])
    logits = torch.stack([(1 - pred) * 50.0, pred * 50.0], dim=1)  # softmax ~ one-hot of pred
    stats = confusion_stats(*confusion_counts(pred, target))
    # Hand count: tp 2, fn 1, fp 1 -> IoU 2/4, Dice 4/6.
    assert stats["iou"] == 0.5 and stats["f1"] == pytest.approx(2 / 3)
    assert soft_jaccard_loss(logits, target, smooth=0).item() == pytest.approx(1 - stats["iou"])
    assert soft_dice_loss(logits, target, smooth=0).item() == pytest.approx(1 - stats["f1"])
    perfect = torch.stack([(1 - target) * 50.0, target * 50.0], dim=1)
    assert build_loss("ce+dice")(perfect, target).item() == pytest.approx(0, abs=1e-6)


def test_combined_loss_is_the_sum_and_deep_supervision_the_mean():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 4, 4))
    total = build_loss("ce")(logits, target) + build_loss("jaccard")(logits, target)
    assert build_loss("ce+jaccard")(logits, target).item() == pytest.approx(total.item())
    other = torch.randn(2, 2, 4, 4)
    ce = build_loss("ce")
    mean = (ce(logits, target) + ce(other, target)) / 2
    assert supervised_loss([logits, other], target, ce).item() == pytest.approx(mean.item())


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ValueError, match="ce, jaccard, dice, ce\\+jaccard, ce\\+dice"):
        build_loss("focal")
    assert all(callable(build_loss(name)) for name in LOSSES)


def test_cross_entropy_equals_torch_and_avoids_the_nondeterministic_cuda_kernel():
    from harness.training.losses import cross_entropy_loss

    torch.manual_seed(0)
    logits = (torch.randn(3, 2, 8, 8) * 4).requires_grad_()
    target = torch.randint(0, 2, (3, 8, 8))
    loss = cross_entropy_loss(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    reference_logits = logits.detach().clone().requires_grad_()
    reference = torch.nn.functional.cross_entropy(reference_logits, target)
    (reference_grad,) = torch.autograd.grad(reference, reference_logits)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6)
    assert torch.allclose(grad, reference_grad, atol=1e-6)
    # F.cross_entropy's (B, C, H, W) path is nll_loss2d, whose CUDA forward uses atomic adds.
    assert "NllLoss2DBackward0" in backward_nodes(reference)
    assert not any("Nll" in name for name in backward_nodes(loss))
    # bf16 logits (autocast) are computed in float32, as before
    half = cross_entropy_loss(logits.detach().bfloat16(), target)
    assert half.dtype == torch.float32
