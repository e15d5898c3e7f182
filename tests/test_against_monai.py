"""The losses and metrics against MONAI's, an implementation written independently of this one.

A user coming from MONAI gets the same numbers here: the Dice and Jaccard losses are MONAI's
``DiceLoss`` (``jaccard=True`` for the second) on sigmoid probabilities, the focal loss is its
sigmoid ``FocalLoss``, and the per-image Dice and IoU at a threshold are its ``DiceMetric`` and
``MeanIoU`` with empty masks scored (not ignored). The region losses agree in float64 to
rounding; MONAI computes its focal loss and the metrics in float32, so those agree to float32's.
"""

from __future__ import annotations

import pytest
import torch

from unet_scratch.losses import DiceLoss, FocalLoss, JaccardLoss
from unet_scratch.metrics import dice_score, iou_score

monai = pytest.importorskip("monai")
from monai.losses import DiceLoss as MonaiDice  # noqa: E402
from monai.losses import FocalLoss as MonaiFocal  # noqa: E402
from monai.metrics import DiceMetric, MeanIoU  # noqa: E402


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (4, 1, 24, 20) in float64 and masks of several sizes, one of them empty."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(4, 1, 24, 20, generator=g, dtype=torch.float64)
    target = torch.zeros(4, 1, 24, 20, dtype=torch.float64)
    target[0, :, 3:15, 4:12] = 1
    target[1, :, 10:12, 9:10] = 1  # a small polyp
    target[2] = (torch.rand(1, 24, 20, generator=g) > 0.6).double()  # scattered
    return logits, target  # target[3]: no polyp


def value_and_gradient(loss: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor) -> tuple:
    x = logits.clone().requires_grad_(True)
    value = loss(x, target)
    value.backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("reduction", ["image", "batch"])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_dice_and_jaccard_losses_are_monais(reduction: str, smooth: float) -> None:
    logits, target = batch()
    if smooth == 0.0:
        target[3, :, 0, 0] = 1  # 0/0 otherwise: both libraries leave an empty image undefined
    per_batch = reduction == "batch"
    ours = {"dice": DiceLoss(smooth, reduction), "jaccard": JaccardLoss(smooth, reduction)}
    # MONAI's Jaccard is (2I + nr) / (2U + dr): the same ratio as (I + s) / (U + s) at nr = dr = 2s
    theirs = {
        "dice": MonaiDice(sigmoid=True, batch=per_batch, smooth_nr=smooth, smooth_dr=smooth),
        "jaccard": MonaiDice(
            sigmoid=True, jaccard=True, batch=per_batch, smooth_nr=2 * smooth, smooth_dr=2 * smooth
        ),
    }
    for name in ours:
        value, grad = value_and_gradient(ours[name], logits, target)
        ref_value, ref_grad = value_and_gradient(theirs[name], logits, target)
        assert value.item() == pytest.approx(ref_value.item(), rel=1e-12, abs=1e-14), name
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-14, msg=name)


@pytest.mark.parametrize("alpha, gamma", [(0.75, 2.0), (0.2, 2.0), (0.75, 0.5), (None, 0.0)])
def test_focal_loss_is_monais(alpha: float | None, gamma: float) -> None:
    logits, target = batch(1)
    value, grad = value_and_gradient(FocalLoss(alpha, gamma), logits, target)
    ref_value, ref_grad = value_and_gradient(MonaiFocal(gamma=gamma, alpha=alpha), logits, target)
    assert value.item() == pytest.approx(ref_value.item(), rel=1e-6)  # MONAI's float32
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-10)


def test_per_image_dice_and_iou_are_monais() -> None:
    logits, target = batch(2)
    prob = torch.sigmoid(logits)
    prob[3] = 0.1  # an empty mask found empty: 1.0 in both
    empty_target_found = target.clone()
    empty_target_found[1] = 0  # an empty mask where the model finds something: 0.0 in both
    for y in (target, empty_target_found):
        pred = (prob > 0.5).double()
        monai_dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
        monai_iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)
        reference = (monai_dice(pred, y).flatten().double(), monai_iou(pred, y).flatten().double())
        torch.testing.assert_close(dice_score(prob, y), reference[0], rtol=1e-6, atol=0)  # MONAI's float32
        torch.testing.assert_close(iou_score(prob, y), reference[1], rtol=1e-6, atol=0)
    assert dice_score(prob, empty_target_found)[1] == 0 and dice_score(prob, target)[3] == 1
