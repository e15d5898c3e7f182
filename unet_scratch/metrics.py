"""Evaluation metrics: per-image Dice and IoU at a threshold, soft variants, pooled scores.

All functions take probabilities ``prob (B, 1, H, W)`` (or ``(B, H, W)``) in [0, 1] and a
target of the same shape in {0, 1}, and return one value per image, ``(B,)``, in float64.

- :func:`dice_score`, :func:`iou_score`: the standard mDice / mIoU ingredients. The
  prediction is ``prob > threshold`` (strictly greater: a probability of exactly 0.5 is
  background at the default threshold). **Empty-mask rule:** when the prediction and the
  target are both empty the score is 1.0 (nothing to find, nothing found); when only one of
  them is empty it is 0.0.
- :func:`soft_dice`, :func:`soft_jaccard`: the reference report's formulas on the raw
  probabilities, no threshold: Dice with smooth 0 and Jaccard with smooth 1. They are
  reported only so that numbers can be set beside the report's; soft Dice is lower than
  thresholded Dice for the same model, because every uncertain pixel costs. Soft Dice of an
  all-zero probability map against an empty target (0/0) follows the empty-mask rule: 1.0.
- :func:`pooled_scores`: Dice and IoU of the whole set treated as one image
  (``2·ΣTP / (2·ΣTP + ΣFP + ΣFN)``), which weighs images by their polyp area.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _flat(prob: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if prob.shape != target.shape:
        raise ValueError(f"prediction and target shapes differ: {tuple(prob.shape)} vs {tuple(target.shape)}")
    return prob.reshape(prob.shape[0], -1).double(), target.reshape(target.shape[0], -1).double()


def confusion(
    prob: torch.Tensor, target: torch.Tensor, threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image pixel counts ``(tp, fp, fn)``, each ``(B,)``, of ``prob > threshold``."""
    p, y = _flat(prob, target)
    pred = (p > threshold).double()
    y = (y > 0.5).double()
    tp = (pred * y).sum(1)
    return tp, (pred * (1 - y)).sum(1), ((1 - pred) * y).sum(1)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with 0/0 -> 1.0 (the empty-mask rule)."""
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.ones_like(den))


def dice_score(prob: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image Dice ``2TP / (2TP + FP + FN)`` of ``prob > threshold``; ``(B,)``."""
    tp, fp, fn = confusion(prob, target, threshold)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def iou_score(prob: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image IoU (Jaccard) ``TP / (TP + FP + FN)`` of ``prob > threshold``; ``(B,)``."""
    tp, fp, fn = confusion(prob, target, threshold)
    return _ratio(tp, tp + fp + fn)


def soft_dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The report's Dice: ``2Σpy / (Σp + Σy)`` on probabilities, smooth 0; ``(B,)``."""
    p, y = _flat(prob, target)
    return _ratio(2 * (p * y).sum(1), p.sum(1) + y.sum(1))


def soft_jaccard(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The report's Jaccard: ``(Σpy + 1) / (Σp + Σy - Σpy + 1)`` on probabilities; ``(B,)``."""
    p, y = _flat(prob, target)
    inter = (p * y).sum(1)
    return (inter + 1) / (p.sum(1) + y.sum(1) - inter + 1)


def pooled_scores(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> tuple[float, float]:
    """Dice and IoU of the summed counts (all images as one); empty-mask rule applies."""
    tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    return float(_ratio(2 * tp, 2 * tp + fp + fn)), float(_ratio(tp, tp + fp + fn))


@dataclass
class SegmentationMeter:
    """Collects per-image scores over batches; :meth:`summary` averages them.

    ``update(prob, target)`` with ``prob, target (B, 1, H, W)``; the per-image lists keep the
    order in which images were seen.
    """

    threshold: float = 0.5
    dice: list[float] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    soft_dice: list[float] = field(default_factory=list)
    soft_jaccard: list[float] = field(default_factory=list)
    counts: list[torch.Tensor] = field(default_factory=list)

    def update(self, prob: torch.Tensor, target: torch.Tensor, pred: torch.Tensor | None = None) -> None:
        """Score a batch; ``pred`` (same shape, bool) replaces ``prob > threshold`` as the mask
        behind the thresholded scores, e.g. after post-processing (the soft scores keep ``prob``)."""
        prob, target = prob.detach().float().cpu(), target.detach().float().cpu()
        hard = prob if pred is None else pred.detach().float().cpu()
        tp, fp, fn = confusion(hard, target, self.threshold if pred is None else 0.5)
        self.dice += _ratio(2 * tp, 2 * tp + fp + fn).tolist()
        self.iou += _ratio(tp, tp + fp + fn).tolist()
        self.soft_dice += soft_dice(prob, target).tolist()
        self.soft_jaccard += soft_jaccard(prob, target).tolist()
        self.counts.append(torch.stack([tp, fp, fn]))

    def merge(self, other: SegmentationMeter) -> None:
        """Add the images another meter scored (e.g. on another process)."""
        self.dice += other.dice
        self.iou += other.iou
        self.soft_dice += other.soft_dice
        self.soft_jaccard += other.soft_jaccard
        self.counts += other.counts

    def summary(self) -> dict[str, float]:
        """Means over images (``dice``, ``iou``, ``soft_dice``, ``soft_jaccard``) + pooled."""
        if not self.dice:
            raise ValueError("no images were scored")
        tp, fp, fn = torch.cat(self.counts, dim=1)
        pooled_dice, pooled_iou = pooled_scores(tp, fp, fn)
        n = len(self.dice)
        return {
            "dice": sum(self.dice) / n,
            "iou": sum(self.iou) / n,
            "soft_dice": sum(self.soft_dice) / n,
            "soft_jaccard": sum(self.soft_jaccard) / n,
            "pooled_dice": pooled_dice,
            "pooled_iou": pooled_iou,
            "images": n,
        }
