"""Metrics: hand-computed per-image, soft and pooled values; threshold and empty-mask rules."""

from __future__ import annotations

import pytest
import torch

from unet_scratch.metrics import (
    SegmentationMeter,
    confusion,
    dice_score,
    iou_score,
    pooled_scores,
    soft_dice,
    soft_jaccard,
)


def pair() -> tuple[torch.Tensor, torch.Tensor]:
    # image 0: pred {0, 1}, target {1, 2} -> TP 1, FP 1, FN 1
    # image 1: pred {0, 1, 2, 3}, target {0} -> TP 1, FP 3, FN 0
    prob = torch.tensor([[0.9, 0.8, 0.1, 0.2], [0.6, 0.7, 0.51, 0.99]]).view(2, 1, 2, 2)
    target = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.float32).view(2, 1, 2, 2)
    return prob, target


def test_per_image_dice_and_iou() -> None:
    prob, target = pair()
    tp, fp, fn = confusion(prob, target)
    assert tp.tolist() == [1, 1] and fp.tolist() == [1, 3] and fn.tolist() == [1, 0]
    assert dice_score(prob, target).tolist() == pytest.approx([2 / 4, 2 / 5])
    assert iou_score(prob, target).tolist() == pytest.approx([1 / 3, 1 / 4])


def test_threshold_is_strict_and_configurable() -> None:
    prob = torch.tensor([0.5, 0.7]).view(1, 1, 1, 2)
    target = torch.tensor([1.0, 1.0]).view(1, 1, 1, 2)
    assert dice_score(prob, target).item() == pytest.approx(2 / 3)  # 0.5 is not > 0.5
    assert dice_score(prob, target, threshold=0.4).item() == 1.0
    assert dice_score(prob, target, threshold=0.8).item() == 0.0


def test_empty_mask_rules() -> None:
    empty = torch.zeros(1, 1, 3, 3)
    some = torch.zeros(1, 1, 3, 3)
    some[..., 1, 1] = 1
    assert dice_score(empty, empty).item() == 1.0 and iou_score(empty, empty).item() == 1.0
    assert dice_score(some, empty).item() == 0.0 and iou_score(empty, some).item() == 0.0
    assert soft_dice(empty, empty).item() == 1.0
    assert pooled_scores(*confusion(empty, empty)) == (1.0, 1.0)


def test_soft_variants_are_the_reference_formulas() -> None:
    prob, target = pair()
    # image 0: Σpy = 0.8 + 0.1, Σp = 2.0, Σy = 2
    assert soft_dice(prob, target)[0].item() == pytest.approx(2 * 0.9 / 4.0)
    # image 1: Σpy = 0.6, Σp = 2.8, Σy = 1, smooth 1
    assert soft_jaccard(prob, target)[1].item() == pytest.approx(1.6 / (2.8 + 1 - 0.6 + 1))


def test_pooled_weights_by_area() -> None:
    prob, target = pair()
    dice, iou = pooled_scores(*confusion(prob, target))
    assert dice == pytest.approx(4 / (4 + 4 + 1))  # TP 2, FP 4, FN 1
    assert iou == pytest.approx(2 / 7)


def test_meter_accumulates_batches() -> None:
    prob, target = pair()
    meter = SegmentationMeter()
    meter.update(prob[:1], target[:1])
    meter.update(prob[1:], target[1:])
    s = meter.summary()
    assert s["images"] == 2
    assert s["dice"] == pytest.approx((0.5 + 0.4) / 2)
    assert s["iou"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    assert s["pooled_dice"] == pytest.approx(4 / 9) and s["pooled_iou"] == pytest.approx(2 / 7)
    # image 0: Σpy 0.9, Σp 2.0, Σy 2; image 1: Σpy 0.6, Σp 2.8, Σy 1
    assert meter.soft_dice == pytest.approx([1.8 / 4, 1.2 / 3.8])
    assert meter.soft_jaccard == pytest.approx([1.9 / 4.1, 1.6 / 4.2])
    assert s["soft_dice"] == pytest.approx((1.8 / 4 + 1.2 / 3.8) / 2)
    assert s["soft_jaccard"] == pytest.approx((1.9 / 4.1 + 1.6 / 4.2) / 2)
    assert meter.dice == pytest.approx([0.5, 0.4])
    # the meter's own threshold: at 0.55 image 1 predicts {0, 1, 3} -> TP 1, FP 2 -> Dice 2 / 4
    strict = SegmentationMeter(threshold=0.55)
    strict.update(prob, target)
    assert strict.dice == pytest.approx([0.5, 0.5]) and strict.iou == pytest.approx([1 / 3, 1 / 3])
    with pytest.raises(ValueError):
        SegmentationMeter().summary()


def test_merge_equals_one_meter_that_saw_everything() -> None:
    torch.manual_seed(0)
    prob, target = torch.rand(6, 1, 5, 5), (torch.rand(6, 1, 5, 5) > 0.6).float()
    whole = SegmentationMeter()
    whole.update(prob, target)
    a, b = SegmentationMeter(), SegmentationMeter()
    a.update(prob[:4], target[:4])
    b.update(prob[4:], target[4:])
    a.merge(b)  # what torchrun's rank 0 does with the other ranks' meters
    assert a.summary() == pytest.approx(whole.summary())
    assert a.dice == pytest.approx(whole.dice) and a.soft_jaccard == pytest.approx(whole.soft_jaccard)
