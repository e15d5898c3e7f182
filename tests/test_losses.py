"""Losses: closed-form values, float64 gradcheck, edge cases, stability under autocast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unet_scratch.losses import (
    LOSSES,
    CombinedLoss,
    DeepSupervisionLoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    LovaszHingeLoss,
    build_loss,
)

# two 1x1x2 "images": logits 0 -> p = 0.5 everywhere
LOGITS = torch.zeros(2, 1, 1, 2)
TARGET = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])


def test_dice_closed_form_batch_and_image() -> None:
    # batch: Σpy = 1.5, Σp = 2, Σy = 3 -> 1 - (3 + 1) / (5 + 1)
    assert DiceLoss(reduction="batch")(LOGITS, TARGET).item() == pytest.approx(1 - 4 / 6)
    # image 1: Σpy=.5 Σp=1 Σy=1 -> 2/3 ; image 2: Σpy=1 Σp=1 Σy=2 -> 3/4
    expected = 1 - (2 / 3 + 3 / 4) / 2
    assert DiceLoss(reduction="image")(LOGITS, TARGET).item() == pytest.approx(expected)
    # smooth 0: pure ratio, 2 * 1.5 / 5
    assert DiceLoss(smooth=0)(LOGITS, TARGET).item() == pytest.approx(1 - 3 / 5)


def test_jaccard_closed_form_batch_and_image() -> None:
    # batch: (1.5 + 1) / (2 + 3 - 1.5 + 1)
    assert JaccardLoss(reduction="batch")(LOGITS, TARGET).item() == pytest.approx(1 - 2.5 / 4.5)
    # image 1: 1.5 / 2.5 ; image 2: 2 / 3
    expected = 1 - (1.5 / 2.5 + 2 / 3) / 2
    assert JaccardLoss(reduction="image")(LOGITS, TARGET).item() == pytest.approx(expected)


def test_focal_closed_form() -> None:
    # p_t = 0.5 for every pixel: (1 - p_t)^2 * log 2 = 0.25 ln 2, weighted 0.2 (polyp) or 0.8
    per_pixel = 0.25 * math.log(2)
    expected = per_pixel * (0.2 * 3 + 0.8 * 1) / 4
    assert FocalLoss()(LOGITS, TARGET).item() == pytest.approx(expected)
    # a confident right pixel (logit 3, y 1): -0.2 * (1 - s(3))^2 * log s(3)
    s = 1 / (1 + math.exp(-3))
    one = FocalLoss()(torch.full((1, 1, 1, 1), 3.0), torch.ones(1, 1, 1, 1)).item()
    assert one == pytest.approx(-0.2 * (1 - s) ** 2 * math.log(s))


def test_combined_is_mean_of_three_with_same_settings() -> None:
    x, y = torch.randn(3, 1, 4, 4), (torch.rand(3, 1, 4, 4) > 0.5).float()
    for reduction in ("batch", "image"):
        parts = [
            DiceLoss(reduction=reduction)(x, y),
            JaccardLoss(reduction=reduction)(x, y),
            FocalLoss(alpha=0.2, gamma=2)(x, y),
        ]
        assert CombinedLoss(reduction=reduction)(x, y).item() == pytest.approx(sum(parts).item() / 3)
    assert CombinedLoss().focal.alpha == 0.2  # the report's combined loss dropped alpha


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("reduction", ["batch", "image"])
def test_gradcheck_float64(name: str, reduction: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(2, 1, 3, 3) > 0.5).double()
    loss = build_loss(name, reduction=reduction)
    assert torch.autograd.gradcheck(lambda z: loss(z, y), (x,))
    assert loss(x, y).dtype == torch.float64  # float64 is not truncated to float32


@pytest.mark.parametrize("reduction", ["batch", "image"])
def test_gradcheck_float64_lovasz_and_focal_per_polyp_pixel(reduction: str) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(2, 1, 3, 3) > 0.5).double()
    for loss in (LovaszHingeLoss(reduction), FocalLoss(0.75, 2.0, reduction, normalize="positives")):
        assert torch.autograd.gradcheck(lambda z, f=loss: f(z, y), (x,))
        assert loss(x, y).dtype == torch.float64


def test_focal_gamma0_no_alpha_is_bce() -> None:
    x, y = torch.randn(2, 1, 5, 5), (torch.rand(2, 1, 5, 5) > 0.5).float()
    got = FocalLoss(alpha=None, gamma=0)(x, y)
    assert got.item() == pytest.approx(F.binary_cross_entropy_with_logits(x, y).item(), rel=1e-6)


def test_alpha_weights_the_polyp_class() -> None:
    x = torch.tensor([[[[-1.0, 2.0]]]])
    pos = FocalLoss(alpha=0.2)(x, torch.ones_like(x))  # every pixel polyp: weight 0.2
    neg = FocalLoss(alpha=0.2)(-x, torch.zeros_like(x))  # mirror image, background: weight 0.8
    unweighted = FocalLoss(alpha=None)(x, torch.ones_like(x))
    assert pos.item() == pytest.approx(0.2 * unweighted.item())
    assert neg.item() == pytest.approx(0.8 * unweighted.item())


@pytest.mark.parametrize("name", ["dice", "jaccard"])
def test_perfect_prediction_gives_zero_region_loss(name: str) -> None:
    y = torch.zeros(2, 1, 8, 8)
    y[:, :, 2:6, 2:6] = 1
    logits = (y * 2 - 1) * 30
    assert build_loss(name)(logits, y).item() == pytest.approx(0, abs=1e-6)
    assert build_loss(name)(-logits, y).item() > 0.9  # and the opposite is near 1


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("sign", [1.0, -1.0])  # confidently right, then confidently wrong
def test_extreme_logits_under_bf16_autocast_stay_finite(name: str, sign: float) -> None:
    y = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    scale = torch.tensor(100.0, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = (scale * sign * (2 * y - 1)).to(torch.bfloat16)  # +-100 in bf16
        loss = build_loss(name)(logits, y)
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(scale.grad)
    if sign < 0:
        assert loss.item() > 0.3  # wrong predictions are penalised, not NaN-ed away


def test_fp16_logits_give_float32_loss() -> None:
    x = torch.tensor([[[[60000.0, -60000.0]]]], dtype=torch.float16)
    y = torch.tensor([[[[0.0, 1.0]]]])
    for name in LOSSES:
        loss = build_loss(name)(x, y)
        assert loss.dtype == torch.float32 and torch.isfinite(loss), name
        assert loss.item() > 0.3  # both pixels confidently wrong: a real penalty, computed in float32


def test_invalid_options_list_valid_ones() -> None:
    with pytest.raises(ValueError, match="dice, jaccard, focal, combined"):
        build_loss("bce")
    with pytest.raises(ValueError, match="batch"):
        DiceLoss(reduction="sum")
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match="same shape"):
        DiceLoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2))


class Probe(torch.nn.Module):
    """A stand-in loss that records what it was given and returns a value known per scale."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, torch.Tensor]] = []

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls.append((logits.shape[-1], target))
        return torch.tensor(float(logits.shape[-1]))  # 32, 16, 8, 4: one value per scale


def test_deep_supervision_weights_and_pooled_targets() -> None:
    probe = Probe()
    loss = DeepSupervisionLoss(probe)
    target = (torch.rand(2, 1, 32, 32) > 0.7).float()
    aux = [torch.zeros(2, 1, s, s) for s in (4, 8, 16)]  # coarsest first, as the model returns them
    value = loss((torch.zeros(2, 1, 32, 32), aux), target)
    # full scale weight 1, then 1/2, 1/4, 1/8 for /2, /4, /8; normalised by their sum 1.875
    assert value.item() == pytest.approx((32 + 16 / 2 + 8 / 4 + 4 / 8) / 1.875)
    by_size = dict(probe.calls)
    assert torch.equal(by_size[32], target)
    for size in (16, 8, 4):  # the fraction of each cell that is polyp
        f = 32 // size
        expected = target.view(2, 1, size, f, size, f).mean(dim=(3, 5))
        torch.testing.assert_close(by_size[size], expected)
    assert loss(torch.zeros(2, 1, 32, 32), target).item() == 32  # logits alone: the plain loss


def test_log_jaccard_is_minus_log_iou() -> None:
    # batch: (1.5 + 1) / (2 + 3 - 1.5 + 1) as in the closed-form test above
    got = JaccardLoss(reduction="batch", log=True)(LOGITS, TARGET).item()
    assert got == pytest.approx(-math.log(2.5 / 4.5))
    per_image = [1.5 / 2.5, 2 / 3]
    got = JaccardLoss(reduction="image", log=True)(LOGITS, TARGET).item()
    assert got == pytest.approx(-sum(math.log(r) for r in per_image) / 2)
    assert (
        build_loss("jaccard", jaccard_log=True).log and build_loss("combined", jaccard_log=True).jaccard.log
    )


def _focal_per_pixel(x: torch.Tensor, y: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """``-α_t (1 - p_t)^γ log p_t`` per pixel, written out from the paper's definition."""
    p = torch.sigmoid(x)
    pt = torch.where(y == 1, p, 1 - p)
    at = torch.where(y == 1, torch.tensor(alpha), torch.tensor(1 - alpha))
    return -at * (1 - pt) ** gamma * torch.log(pt)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
def test_focal_closed_form_for_any_gamma(gamma: float) -> None:
    x, y = torch.tensor([[[[2.0, -1.0, 0.5]]]]), torch.tensor([[[[1.0, 0.0, 0.0]]]])
    expected = _focal_per_pixel(x, y, 0.3, gamma).mean()
    assert FocalLoss(alpha=0.3, gamma=gamma)(x, y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_every_setting_reaches_its_loss() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(3, 1, 6, 6), (torch.rand(3, 1, 6, 6) > 0.6).float()
    settings = {"smooth": 0.0, "reduction": "image", "alpha": 0.35, "gamma": 3.0}
    by_hand = {
        "dice": DiceLoss(0.0, "image")(x, y),
        "jaccard": JaccardLoss(0.0, "image")(x, y),
        "focal": FocalLoss(0.35, 3.0)(x, y),
    }
    by_hand["combined"] = sum(by_hand.values()) / 3
    for name, expected in by_hand.items():
        assert build_loss(name, **settings)(x, y).item() == pytest.approx(expected.item(), rel=1e-6), name
    combined = CombinedLoss(smooth=0.0, reduction="image", alpha=0.35, gamma=3.0)
    assert (combined.dice.smooth, combined.jaccard.reduction, combined.focal.gamma) == (0.0, "image", 3.0)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-0.5)


def _iou_loss_of_sets(polyp: set[int], predicted: set[int]) -> float:
    """1 - IoU of two pixel-index sets (1 - 1 = 0 when both are empty)."""
    union = polyp | predicted
    return 1 - len(polyp & predicted) / len(union) if union else 0.0


def _lovasz_by_definition(errors: list[float], polyp: set[int]) -> float:
    """The Lovász extension of 1 - IoU at ``errors`` (>= 0), from its definition.

    Pixels are taken from the largest error down; each adds its error times the rise in
    ``1 - IoU`` when it joins the set of pixels predicted wrong (a wrong polyp pixel leaves the
    prediction, a wrong background pixel enters it). Plain Python sets, no tensors.
    """
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    total, wrong, before = 0.0, set(), 0.0
    for i in order:
        wrong.add(i)
        predicted = (polyp - wrong) | (wrong - polyp)
        after = _iou_loss_of_sets(polyp, predicted)
        total += errors[i] * (after - before)
        before = after
    return total


def test_lovasz_hinge_is_the_lovasz_extension_of_the_iou_loss() -> None:
    torch.manual_seed(3)
    x, y = torch.randn(3, 1, 4, 5) * 2, (torch.rand(3, 1, 4, 5) > 0.6).float()
    y[2] = 0  # an image without polyp
    per_image = []
    for b in range(3):
        z, labels = x[b].flatten().tolist(), y[b].flatten().tolist()
        errors = [max(0.0, 1 - zi * (2 * li - 1)) for zi, li in zip(z, labels)]
        per_image.append(_lovasz_by_definition(errors, {i for i, li in enumerate(labels) if li}))
    got = LovaszHingeLoss("image")(x, y).item()
    assert got == pytest.approx(sum(per_image) / 3, rel=1e-6)
    # "batch": the three images as one set of pixels
    z, labels = x.flatten().tolist(), y.flatten().tolist()
    errors = [max(0.0, 1 - zi * (2 * li - 1)) for zi, li in zip(z, labels)]
    whole = _lovasz_by_definition(errors, {i for i, li in enumerate(labels) if li})
    assert LovaszHingeLoss("batch")(x, y).item() == pytest.approx(whole, rel=1e-6)


def test_lovasz_hinge_is_tight_on_binary_errors() -> None:
    # logit +-1 on the right side (hinge error 0) or 0 (error 1, counted wrong): the loss is
    # then exactly 1 - IoU of the binary prediction, the quantity it stands in for
    y = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0, 0, 0]).view(1, 1, 2, 5)
    wrong = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0, 0, 0]).view(1, 1, 2, 5)  # 1 polyp missed, 2 false
    logits = (2 * y - 1) * (1 - wrong)
    # prediction: 3 polyp pixels right + 2 false: IoU = 3 / (4 + 2)
    assert LovaszHingeLoss()(logits, y).item() == pytest.approx(1 - 3 / 6)
    assert LovaszHingeLoss()((2 * y - 1) * 4, y).item() == 0.0  # right with margin: no loss


def test_lovasz_hinge_pushes_a_missed_polyp_where_soft_jaccard_does_not() -> None:
    # polyp of 4 pixels predicted at logit -12 (p = 6e-6), background right: each polyp logit
    # gets -1/4 from the hinge (d(1 - IoU) per missed pixel), and ~p(1-p)/4 from soft Jaccard
    y = torch.zeros(1, 1, 4, 4)
    y[..., 1:3, 1:3] = 1
    logits = torch.full_like(y, -12.0).requires_grad_()
    LovaszHingeLoss("image")(logits, y).backward()
    torch.testing.assert_close(logits.grad[y == 1], torch.full((4,), -0.25))
    assert torch.all(logits.grad[y == 0] == 0)
    soft = logits.detach().clone().requires_grad_()
    JaccardLoss(smooth=0.0, reduction="image")(soft, y).backward()
    assert soft.grad[y == 1].abs().max() < 1e-5


def test_lovasz_hinge_reads_soft_targets_at_one_half_and_replaces_jaccard() -> None:
    x = torch.randn(2, 1, 4, 4)
    soft = torch.rand(2, 1, 4, 4)
    soft[0, 0, 0, :2] = 0.5  # a cell half polyp, as 2x2 average pooling makes them: polyp
    expected = LovaszHingeLoss("image")(x, (soft >= 0.5).float())
    assert LovaszHingeLoss("image")(x, soft).item() == pytest.approx(expected.item())
    assert expected.item() != pytest.approx(LovaszHingeLoss("image")(x, (soft > 0.5).float()).item())
    assert isinstance(build_loss("jaccard", jaccard_lovasz=True), LovaszHingeLoss)
    assert isinstance(build_loss("combined", jaccard_lovasz=True).jaccard, LovaszHingeLoss)
    with pytest.raises(ValueError, match="not both"):
        build_loss("jaccard", jaccard_log=True, jaccard_lovasz=True)


def test_focal_normalized_by_polyp_pixels_per_image() -> None:
    # image 1: 1 polyp pixel of 3; image 2: no polyp (divided by 1, not 0)
    x = torch.tensor([[[[2.0, -1.0, 0.5]]], [[[0.3, -2.0, 1.0]]]])
    y = torch.tensor([[[[1.0, 0.0, 0.0]]], [[[0.0, 0.0, 0.0]]]])
    per_pixel = _focal_per_pixel(x, y, 0.75, 2.0)
    expected = (per_pixel[0].sum() / 1 + per_pixel[1].sum() / 1) / 2
    got = FocalLoss(alpha=0.75, gamma=2.0, normalize="positives")(x, y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # two polyp pixels in image 1 halve its weight; the pixel mean weighs images by area alone
    y2 = torch.tensor([[[[1.0, 1.0, 0.0]]], [[[0.0, 0.0, 0.0]]]])
    per_pixel2 = _focal_per_pixel(x, y2, 0.75, 2.0)
    expected2 = (per_pixel2[0].sum() / 2 + per_pixel2[1].sum()) / 2
    got2 = build_loss("focal", alpha=0.75, focal_normalize="positives")(x, y2)
    assert got2.item() == pytest.approx(expected2.item(), rel=1e-6)
    assert build_loss("combined", focal_normalize="positives").focal.normalize == "positives"
    with pytest.raises(ValueError, match="pixels"):
        FocalLoss(normalize="anchors")
