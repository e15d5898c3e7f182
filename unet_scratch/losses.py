"""Segmentation losses written by hand: Dice, Jaccard (IoU), focal and their mean.

The Jaccard loss also comes as the Lovász hinge (``--jaccard-lovasz``), a surrogate of
``1 - IoU`` on the logits; docs/RESULTS.md has what it and the other options measured.

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
have the same size (or, with ``normalize="positives"``, each image's sum over its polyp pixels).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("batch", "image")
FOCAL_NORMALIZE = ("pixels", "positives")


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


class LovaszHingeLoss(nn.Module):
    r"""The Lovász hinge: a convex surrogate of ``1 - IoU`` on the logits, not the probabilities.

    Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss: A tractable surrogate for the
    optimization of the intersection-over-union measure in neural networks" (CVPR 2018). Each
    pixel's hinge error is ``e = max(0, 1 - z·s)`` with ``z`` the logit and ``s = ±1`` its label;
    the errors are sorted from largest to smallest and weighted by how much the IoU of the
    binary mask falls as each further pixel is counted wrong (the gradient of the Lovász
    extension of ``1 - IoU``). A missed polyp pixel ranked behind ``j`` false positives weighs
    ``1 / (|y| + j)``, ``|y|`` the polyp pixels of the image (of the batch with ``"batch"``);
    an image without polyp passes its whole weight to its single largest error.

    Why it is here: the soft Jaccard loss reaches each logit through the sigmoid, whose slope
    ``p(1 - p)`` vanishes on a polyp the model misses completely (docs/RESULTS.md, "Why the
    Jaccard loss trails the Dice loss"); the hinge is linear in the logit, so a missed polyp
    pixel is pushed as hard as any other error. Threshold 0 on the logits is 0.5 on ``p``.

    Targets are read as ``y >= 0.5`` (the ranking needs binary labels; deep supervision's
    average-pooled targets become the cells at least half polyp). ``reduction`` as for
    :class:`_RegionLoss`: ``"image"`` sorts each image's pixels and averages the per-image
    losses, ``"batch"`` sorts the whole batch as one set.
    """

    def __init__(self, reduction: str = "batch") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits, target (B, 1, H, W)`` -> scalar loss >= 0."""
        logits, target = _as_float(logits, target)
        rows = 1 if self.reduction == "batch" else logits.shape[0]
        z, y = logits.reshape(rows, -1), (target.reshape(rows, -1) >= 0.5).to(logits.dtype)
        errors = 1 - z * (2 * y - 1)  # (rows, N)
        errors, order = errors.sort(dim=1, descending=True)
        y = y.gather(1, order)
        # IoU loss of the binary mask when the k largest errors are all counted wrong, k = 1..N;
        # the union is >= 1 from the first pixel on (it is polyp, or a false positive), so no 0/0
        polyp = y.sum(1, keepdim=True)
        iou_loss = 1 - (polyp - y.cumsum(1)) / (polyp + (1 - y).cumsum(1))
        weights = torch.cat([iou_loss[:, :1], iou_loss[:, 1:] - iou_loss[:, :-1]], dim=1)
        # the weights depend on the labels and the sort's order only: the loss is linear in the
        # errors between two changes of order (the Lovász extension is piecewise linear)
        return (F.relu(errors) * weights).sum(1).mean()


class FocalLoss(nn.Module):
    r"""Binary focal loss, ``mean(-α_t (1 - p_t)^γ log p_t)`` over all pixels (by default).

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
        reduction: accepted for a uniform interface; both values give the same result.
        normalize: ``"pixels"``, the mean over every pixel of the batch; or ``"positives"``,
            each image's sum divided by its number of polyp pixels (at least 1), then the mean
            over images, as RetinaNet divides by the anchors assigned to an object. The second
            weighs a frame by ``1 / polyp area``: its polyp pixels then weigh the same in total
            in every frame, and its background pixels (most of the frame) weigh more the smaller
            the polyp, so a small polyp's frame counts more than a large one's. The loss grows
            by about ``1 / polyp fraction`` (~10x here), which inside combined outweighs the
            Dice and Jaccard thirds.
    """

    def __init__(
        self,
        alpha: float | None = 0.2,
        gamma: float = 2.0,
        reduction: str = "batch",
        normalize: str = "pixels",
    ) -> None:
        super().__init__()
        if normalize not in FOCAL_NORMALIZE:
            raise ValueError(f"normalize must be one of {FOCAL_NORMALIZE}, got {normalize!r}")
        self.normalize = normalize
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
        if self.normalize == "pixels":
            return loss.mean()
        per_image = loss.flatten(1).sum(1) / target.flatten(1).sum(1).clamp(min=1)
        return per_image.mean()


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
        jaccard_lovasz: bool = False,
        focal_normalize: str = "pixels",
    ) -> None:
        super().__init__()
        self.dice = DiceLoss(smooth, reduction)
        self.jaccard = _jaccard(smooth, reduction, jaccard_log, jaccard_lovasz)
        self.focal = FocalLoss(alpha, gamma, reduction, focal_normalize)

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
    jaccard_lovasz: bool = False,
    focal_normalize: str = "pixels",
) -> nn.Module:
    """The loss registered under ``name``, given only the settings that apply to it."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    if name == "dice":
        return DiceLoss(smooth=smooth, reduction=reduction)
    if name == "jaccard":
        return _jaccard(smooth, reduction, jaccard_log, jaccard_lovasz)
    if name == "focal":
        return FocalLoss(alpha=alpha, gamma=gamma, reduction=reduction, normalize=focal_normalize)
    return CombinedLoss(smooth, reduction, alpha, gamma, jaccard_log, jaccard_lovasz, focal_normalize)


def _jaccard(smooth: float, reduction: str, log: bool, lovasz: bool) -> nn.Module:
    """The Jaccard loss alone or in combined: soft 1 - IoU, -log IoU, or the Lovász hinge."""
    if log and lovasz:
        raise ValueError("the Jaccard loss is either -log(IoU) or the Lovász hinge, not both")
    return LovaszHingeLoss(reduction) if lovasz else JaccardLoss(smooth, reduction, log=log)
