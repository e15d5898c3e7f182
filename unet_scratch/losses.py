"""Segmentation losses written by hand: Dice, Jaccard (IoU), focal and their mean.

Every loss takes ``logits (B, 1, H, W)`` (any float dtype, e.g. bf16 under autocast) and a
``target (B, 1, H, W)`` in {0, 1}, and returns a scalar. The arithmetic runs in at least
float32 (float64 stays float64, so ``gradcheck`` works), and the focal loss works in log
space from the logits, so that neither bf16 nor fp16 autocast can produce inf or NaN.

``reduction`` for the region losses (Dice, Jaccard):

- ``"batch"``: one ratio over every pixel of the batch (sums over B, H, W), as in
  segmentation_models_pytorch's binary mode. Large polyps dominate the sums.
- ``"image"``: one ratio per image, then the mean over images. Every image counts the same,
  which matches the per-image mDice the project reports.

The focal loss is a mean over pixels, which is the same for both reductions when the images
have the same size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("batch", "image")


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _as_float(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cast both to at least float32 (bf16/fp16 -> fp32; fp64 stays fp64)."""
    if logits.shape != target.shape:
        raise ValueError(
            f"logits and target must have the same shape, got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return logits.to(dtype), target.to(dtype)


def _region_sums(
    logits: torch.Tensor, target: torch.Tensor, reduction: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft ``(Σ p·y, Σ p, Σ y)`` over the batch (scalars) or per image (``(B,)``)."""
    logits, target = _as_float(logits, target)
    p = torch.sigmoid(logits)
    dims = tuple(range(logits.dim())) if reduction == "batch" else tuple(range(1, logits.dim()))
    return (p * target).sum(dims), p.sum(dims), target.sum(dims)


class _RegionLoss(nn.Module):
    """Dice and Jaccard share this: soft sums over the batch or per image, ``1 - mean(ratio)``.

    Args:
        smooth: the constant ``s`` added to numerator and denominator; it keeps the loss
            defined (and its gradient finite) for empty masks.
        reduction: ``"batch"`` or ``"image"`` (see the module docstring).
        log: ``mean(-log(ratio))`` instead of ``1 - mean(ratio)`` (segmentation_models_pytorch's
            ``log_loss``): the same minimum, but each image's gradient is divided by its ratio,
            so images the model gets badly wrong weigh more than ones it already gets right.
    """

    def __init__(self, smooth: float = 1.0, reduction: str = "batch", log: bool = False) -> None:
        super().__init__()
        self.smooth = float(smooth)
        self.reduction = _check_reduction(reduction)
        self.log = log

    def ratio(self, inter: torch.Tensor, p_sum: torch.Tensor, y_sum: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits, target (B, 1, H, W)`` -> scalar loss in [0, 1] (``log``: in [0, inf))."""
        inter, p_sum, y_sum = _region_sums(logits, target, self.reduction)
        ratio = self.ratio(inter, p_sum, y_sum)
        return -ratio.log().mean() if self.log else 1 - ratio.mean()


class DiceLoss(_RegionLoss):
    r"""Soft Dice loss, ``1 - (2 Σpy + s) / (Σp + Σy + s)`` with ``p = sigmoid(logits)``.

    Milletari et al., "V-Net: Fully Convolutional Neural Networks for Volumetric Medical
    Image Segmentation" (3DV 2016), with the additive smoothing ``s`` of the reference report.
    Arguments as :class:`_RegionLoss` (``smooth=1.0``, ``reduction="batch"``).
    """

    def ratio(self, inter: torch.Tensor, p_sum: torch.Tensor, y_sum: torch.Tensor) -> torch.Tensor:
        return (2 * inter + self.smooth) / (p_sum + y_sum + self.smooth)


class JaccardLoss(_RegionLoss):
    r"""Soft Jaccard (IoU) loss, ``1 - (Σpy + s) / (Σp + Σy - Σpy + s)``.

    Rahman & Wang, "Optimizing Intersection-Over-Union in Deep Neural Networks for Image
    Segmentation" (ISVC 2016): the intersection and union of the probabilities replace those
    of the binary sets, which makes IoU differentiable. Arguments as :class:`_RegionLoss`.
    """

    def ratio(self, inter: torch.Tensor, p_sum: torch.Tensor, y_sum: torch.Tensor) -> torch.Tensor:
        return (inter + self.smooth) / (p_sum + y_sum - inter + self.smooth)


class FocalLoss(nn.Module):
    r"""Binary focal loss, ``mean(-α_t (1 - p_t)^γ log p_t)`` over all pixels.

    Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017), eq. 5. ``p_t`` is the
    probability given to the true class: ``p`` where ``y = 1`` and ``1 - p`` where ``y = 0``.
    ``log p_t`` is ``-BCEWithLogits(logits, y)``, i.e. a log-sigmoid of the logits, which stays
    finite for any logit in any precision.

    ``α_t = α`` for polyp pixels (``y = 1``) and ``1 - α`` for background, as in the reference
    report and in segmentation_models_pytorch's binary focal loss. With the report's
    ``α = 0.2`` a polyp pixel weighs 0.2 and a background pixel 0.8: the loss favours the
    background, the opposite of what α is usually for. ``alpha=None`` means no weighting;
    ``gamma=0`` and ``alpha=None`` give plain binary cross-entropy.

    Args:
        alpha: weight of the positive (polyp) class in [0, 1], or None.
        gamma: focusing exponent >= 0; larger down-weights well-classified pixels more.
        reduction: accepted for a uniform interface; both values give the pixel mean.
    """

    def __init__(self, alpha: float | None = 0.2, gamma: float = 2.0, reduction: str = "batch") -> None:
        super().__init__()
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.alpha = alpha
        self.gamma = float(gamma)
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits, target (B, 1, H, W)`` -> scalar loss >= 0."""
        logits, target = _as_float(logits, target)
        log_pt = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        loss = -log_pt
        if self.gamma != 0:
            loss = loss * (1 - log_pt.exp()) ** self.gamma
        if self.alpha is not None:
            loss = loss * (self.alpha * target + (1 - self.alpha) * (1 - target))
        return loss.mean()


class CombinedLoss(nn.Module):
    """The mean of :class:`DiceLoss`, :class:`JaccardLoss` and :class:`FocalLoss`.

    Each part takes the settings given here (the reference report's combined loss silently
    dropped focal's α; this one does not). Training passes ``combined_focal_alpha`` as
    ``alpha`` (0.2 by default, while the focal loss alone trains with 0.75; docs/RESULTS.md).
    """

    def __init__(
        self,
        smooth: float = 1.0,
        reduction: str = "batch",
        alpha: float | None = 0.2,
        gamma: float = 2.0,
        jaccard_log: bool = False,
    ) -> None:
        super().__init__()
        self.dice = DiceLoss(smooth, reduction)
        self.jaccard = JaccardLoss(smooth, reduction, log=jaccard_log)
        self.focal = FocalLoss(alpha, gamma, reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits, target (B, 1, H, W)`` -> scalar loss."""
        parts = (self.dice(logits, target), self.jaccard(logits, target), self.focal(logits, target))
        return sum(parts) / 3


class DeepSupervisionLoss(nn.Module):
    """A loss on the main logits plus the same loss on auxiliary, coarser logits.

    Deep supervision as nnU-Net uses it (Isensee et al., Nature Methods 2021): the output at
    each coarser scale gets half the weight of the next finer one, and the weights are
    normalised to sum to 1. The target at a coarser scale is the full-resolution target
    average-pooled to it, i.e. the fraction of each cell that is polyp, so a small polyp is not
    lost at ``/8``. ``output`` is ``logits (B, 1, H, W)`` alone (then this is just ``loss``) or
    ``(logits, [aux (B, 1, H/f, W/f), ...])`` with the aux logits coarsest first.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, output: torch.Tensor | tuple, target: torch.Tensor) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            return self.loss(output, target)
        logits, aux = output
        total, weights = self.loss(logits, target), 1.0
        for k, a in enumerate(reversed(aux), start=1):  # finest first: weights 1/2, 1/4, ...
            factor = target.shape[-1] // a.shape[-1]
            total = total + 0.5**k * self.loss(a, F.avg_pool2d(target, factor))
            weights += 0.5**k
        return total / weights


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "dice": DiceLoss,
    "jaccard": JaccardLoss,
    "focal": FocalLoss,
    "combined": CombinedLoss,
}


def build_loss(
    name: str,
    smooth: float = 1.0,
    reduction: str = "batch",
    alpha: float | None = 0.2,
    gamma: float = 2.0,
    jaccard_log: bool = False,
) -> nn.Module:
    """The loss registered under ``name``, given only the settings that apply to it."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    if name == "dice":
        return DiceLoss(smooth=smooth, reduction=reduction)
    if name == "jaccard":
        return JaccardLoss(smooth=smooth, reduction=reduction, log=jaccard_log)
    if name == "focal":
        return FocalLoss(alpha=alpha, gamma=gamma, reduction=reduction)
    return CombinedLoss(smooth=smooth, reduction=reduction, alpha=alpha, gamma=gamma, jaccard_log=jaccard_log)
