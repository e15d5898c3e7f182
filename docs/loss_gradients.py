"""The gradient each loss sends to one pixel it gets wrong, as the polyp's size and the pixel's
probability change: the figure docs/loss_gradients.png of docs/ARCHITECTURE.md.

    python docs/loss_gradients.py --out docs/loss_gradients.png      # needs matplotlib
    python docs/loss_gradients.py --polyp-sizes ../shared/data/cvc-clinicdb-dev   # the 7.1 % below

The scene is one 128 x 128 image (16,384 pixels) with a polyp covering a fraction ``f`` of it.
The model is mostly right: polyp pixels at probability 0.8, background at 0.02. Two pixels are
wrong: a **missed polyp pixel** (y = 1, probability p) and a **false-positive pixel** (y = 0,
probability p). For each loss of losses.py (per-image reduction, smoothing 1, as training uses
them) autograd gives dL/dz at those two pixels, z being the logit: the push the loss gives them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet_scratch.data import find_pairs, read_mask  # noqa: E402
from unet_scratch.losses import build_loss  # noqa: E402

SIZE = 128
LOSSES = {  # label -> build_loss arguments (training's settings: per image, smooth 1, gamma 2)
    "Dice": ("dice", {}),
    "Jaccard": ("jaccard", {}),
    "focal, alpha 0.2": ("focal", {"alpha": 0.2}),
    "focal, alpha 0.75": ("focal", {"alpha": 0.75}),
    "combined (focal alpha 0.2)": ("combined", {"alpha": 0.2}),
}


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def pixel_gradients(name: str, kwargs: dict, fraction: float, p: float) -> tuple[float, float]:
    """``(dL/dz at the missed polyp pixel, dL/dz at the false-positive pixel)`` in the scene above."""
    n = SIZE * SIZE
    area = max(2, round(fraction * n))
    y = torch.zeros(n, dtype=torch.float64)
    y[:area] = 1
    z = torch.full((n,), logit(0.02), dtype=torch.float64)
    z[:area] = logit(0.8)
    z[0] = logit(p)  # the missed polyp pixel
    z[-1] = logit(p)  # the false-positive pixel
    z.requires_grad_(True)
    loss = build_loss(name, smooth=1.0, reduction="image", **kwargs)(
        z.view(1, 1, SIZE, SIZE), y.view(1, 1, SIZE, SIZE)
    )
    (grad,) = torch.autograd.grad(loss, z)
    return grad[0].item(), grad[-1].item()


def polyp_fractions(root: str | Path) -> np.ndarray:
    """The fraction of each frame of the dataset ``root`` its polyp covers (mask > 127, at the
    frame's own size), in frame order."""
    return np.array([(read_mask(mask) > 127).mean() for _, (_, mask) in sorted(find_pairs(root).items())])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", default="docs/loss_gradients.png")
    parser.add_argument(
        "--polyp-sizes", metavar="DATA", help="print the mean and median polyp area of a dataset's frames"
    )
    args = parser.parse_args(argv)
    if args.polyp_sizes:
        f = polyp_fractions(args.polyp_sizes)
        print(
            f"{len(f)} frames: polyps cover {100 * f.mean():.1f} % of a frame on average, median "
            f"{100 * np.median(f):.1f} %, from {100 * f.min():.1f} to {100 * f.max():.1f} %"
        )
        return 0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = np.geomspace(0.003, 0.5, 40)  # frames 1-428's polyps: 0.4 % to 48.5 % of the frame
    probs = np.linspace(0.02, 0.98, 40)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for label, (name, kwargs) in LOSSES.items():
        by_size = np.array([pixel_gradients(name, kwargs, f, 0.1) for f in fractions])
        by_size_fp = np.array([pixel_gradients(name, kwargs, f, 0.9) for f in fractions])
        by_p = np.array([pixel_gradients(name, kwargs, 0.071, p) for p in probs])
        axes[0, 0].loglog(fractions, -by_size[:, 0], label=label)
        axes[0, 1].loglog(fractions, by_size_fp[:, 1], label=label)
        axes[1, 0].semilogy(probs, -by_p[:, 0], label=label)
        axes[1, 1].semilogy(probs, by_p[:, 1], label=label)
    titles = [
        ("missed polyp pixel (p = 0.1): -dL/dz vs polyp size", "polyp area / frame"),
        ("false-positive pixel (p = 0.9): dL/dz vs polyp size", "polyp area / frame"),
        ("missed polyp pixel, polyp 7.1 % of the frame: -dL/dz vs p", "probability p of the pixel"),
        ("false-positive pixel, polyp 7.1 % of the frame: dL/dz vs p", "probability p of the pixel"),
    ]
    for ax, (title, xlabel) in zip(axes.flat, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("gradient magnitude at that pixel")
    axes[1, 0].set_ylabel("gradient magnitude at that pixel")
    axes[0, 0].axvline(0.071, color="#999999", linestyle=":")
    axes[0, 1].axvline(0.071, color="#999999", linestyle=":")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(
        "The push each loss gives one wrong pixel of a 128x128 image (polyp pixels at p 0.8, "
        "background at 0.02); dotted: the median polyp (7.1 %)",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
