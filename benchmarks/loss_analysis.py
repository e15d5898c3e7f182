"""Why the Jaccard model trails the Dice model, and why the focal model's probabilities stay near
the middle: measurements on trained runs and validation frames (docs/RESULTS.md).

    python benchmarks/loss_analysis.py jaccard --run RUN --data DIR --frames 364-428
    python benchmarks/loss_analysis.py focal --run RUN --data DIR --frames 364-428
    python benchmarks/loss_analysis.py focal --run R1 R2 R3 --data DIR --frames 364-428 278-363 178-277

``jaccard``: for every validation image, the gradient the per-image Dice loss and the per-image
Jaccard loss send to that image's logits (the norm of d loss_i / d logits), against the image's
soft Dice D. Per image J = D / (2 - D) (exactly with no smoothing), so the Jaccard gradient is the
Dice gradient times 2 / (2 - D)^2: it prints that ratio measured and predicted, and the share of
a batch's gradient that goes to the images the model misses (D < 0.3) under either loss.

``focal``: where a focal model's probabilities lie (inside and outside the polyps), the
probability p* that minimises the focal loss for a pixel that is polyp with frequency q (the
loss's own calibration map), and a temperature on the logits: ``sigmoid(T * logit)`` keeps every
thresholded mask (the sign of the logit) and so mDice@0.5, while T > 1 makes the probabilities
confident; T is fitted by minimising the binary cross-entropy on the frames given (with several
runs, also once over all their frames together).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet_scratch.data import load_frames, parse_frames  # noqa: E402
from unet_scratch.engine import predict  # noqa: E402
from unet_scratch.inference import load_run  # noqa: E402
from unet_scratch.losses import DiceLoss, FocalLoss, JaccardLoss  # noqa: E402
from unet_scratch.metrics import SegmentationMeter  # noqa: E402


@torch.no_grad()
def logits_of(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i : i + 16].float() / 255) for i in range(0, len(images), 16)])


def jaccard(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> None:
    logits, y = logits_of(model, images).double(), masks.double()
    rows = []
    for z, t in zip(logits, y):
        z = z[None].clone().requires_grad_(True)
        grads = []
        for loss in (DiceLoss(reduction="image"), JaccardLoss(reduction="image")):
            (g,) = torch.autograd.grad(loss(z, t[None]), z)
            grads.append(g.norm().item())
        p = torch.sigmoid(z.detach())
        soft_dice = (2 * (p * t).sum() / (p.sum() + t.sum())).item()
        rows.append((soft_dice, grads[0], grads[1]))
    rows.sort()
    print(f"{'soft Dice D':>11} {'|grad| Dice':>12} {'|grad| Jaccard':>15} {'ratio':>7} {'2/(2-D)^2':>10}")
    for d, gd, gj in rows[:: max(1, len(rows) // 12)]:
        print(f"{d:11.3f} {gd:12.2e} {gj:15.2e} {gj / gd:7.3f} {2 / (2 - d) ** 2:10.3f}")
    missed = [r for r in rows if r[0] < 0.3]
    for k, name in ((1, "Dice"), (2, "Jaccard")):
        share = sum(r[k] for r in missed) / sum(r[k] for r in rows)
        print(f"{name}: the {len(missed)} of {len(rows)} images with D < 0.3 get {100 * share:.1f} % of it")


def focal_optimum(q: float, alpha: float, gamma: float) -> float:
    """The p minimising q * alpha * f(p) + (1 - q) * (1 - alpha) * f(1 - p), f(p) = -(1-p)^g log p."""
    lo, hi = 1e-6, 1 - 1e-6

    def slope(p: float) -> float:  # the derivative of the expected loss, increasing in p
        d_pos = -((1 - p) ** gamma) / p + gamma * (1 - p) ** (gamma - 1) * math.log(p)  # d/dp of f(p)
        d_neg = (p**gamma) / (1 - p) - gamma * p ** (gamma - 1) * math.log(1 - p)  # d/dp of f(1 - p)
        return q * alpha * d_pos + (1 - q) * (1 - alpha) * d_neg

    for _ in range(200):  # bisection on the slope's sign
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The T > 0 that minimises the mean binary cross-entropy of ``sigmoid(T * logits)`` against
    ``y`` (temperature scaling, Guo et al. 2017, with T multiplying): a golden-section search on
    log T, where the cross-entropy is unimodal."""

    def bce(log_t: float) -> float:
        z = math.exp(log_t) * logits
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y).item()

    lo, hi, g = math.log(0.05), math.log(50.0), (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        lo, hi = (lo, b) if bce(a) < bce(b) else (a, hi)
    return math.exp((lo + hi) / 2)


def focal(model: torch.nn.Module, config: object, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Prints the analysis; returns the logits (float64) it computed, for a fit over several runs."""
    logits, y = logits_of(model, images).double(), masks.double()
    p = torch.sigmoid(logits)
    inside, outside = p[y == 1], p[y == 0]
    quartiles = inside.quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    print(
        f"probabilities inside polyps: mean {inside.mean():.3f}, quartiles {[round(v, 3) for v in quartiles]}"
    )
    above = (outside > 0.1).double().mean()
    print(f"probabilities outside polyps: mean {outside.mean():.3f}, share above 0.1: {above:.3f}")
    print(f"share of polyp pixels with p > 0.9: {(inside > 0.9).double().mean():.3f}")
    alpha, gamma = config.focal_alpha, config.focal_gamma
    print(f"\nfocal optimum p* for a pixel that is polyp with frequency q (alpha {alpha}, gamma {gamma}), "
          "and for plain cross-entropy (p* = q):")  # fmt: skip
    for q in (0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0):
        print(f"  q {q:4.2f}: p* {focal_optimum(min(q, 1 - 1e-9), alpha, gamma):.3f}")
    print("\ntemperature T on the logits (the masks and mDice@0.5 do not change):")
    fitted = fit_temperature(logits, y)
    for t in sorted({1.0, 1.5, 2.0, 3.0, 4.0, 6.0, round(fitted, 2)}):
        pt = torch.sigmoid(t * logits)
        bce = torch.nn.functional.binary_cross_entropy(pt, y).item()
        meter = SegmentationMeter()
        meter.update(pt.float(), y.float())
        s = meter.summary()
        mark = "  <- lowest cross-entropy" if t == round(fitted, 2) else ""
        print(f"  T {t:4.2f}: mDice@0.5 {s['dice']:.4f}, soft Dice {s['soft_dice']:.4f}, BCE {bce:.4f}{mark}")
    print(f"focal loss of the model on these frames: {FocalLoss(alpha, gamma)(logits, y).item():.4f}")
    return logits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("jaccard", "focal"))
    p.add_argument("--run", required=True, nargs="+", help="one or more run folders")
    p.add_argument("--data", required=True)
    p.add_argument("--frames", default=["364-428"], nargs="+", help="frames per run (or one for all)")
    args = p.parse_args(argv)
    if len(args.frames) not in (1, len(args.run)):
        p.error("--frames takes one range, or one per --run")
    frames = args.frames * len(args.run) if len(args.frames) == 1 else args.frames
    pooled_logits, pooled_masks = [], []
    for run, spec in zip(args.run, frames):
        model, config, _ = load_run(run)
        images, masks = load_frames(args.data, parse_frames(spec), config.input_size)
        print(f"{run} ({config.loss}), frames {spec}, mDice@0.5 {_mdice(model, images, masks):.4f}\n")
        if args.what == "jaccard":
            jaccard(model, images, masks)
        else:
            pooled_logits.append(focal(model, config, images, masks).flatten())
            pooled_masks.append(masks.double().flatten())
        print()
    if len(pooled_logits) > 1:  # one temperature for all the runs' frames together
        t = fit_temperature(torch.cat(pooled_logits), torch.cat(pooled_masks))
        print(f"the {len(pooled_logits)} runs' frames together: lowest cross-entropy at T = {t:.2f}")
    return 0


def _mdice(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> float:
    meter = SegmentationMeter()
    meter.update(predict(model, images, None), masks)
    return meter.summary()["dice"]


if __name__ == "__main__":
    sys.exit(main())
