"""What each stage sees: feature maps of one image, before and after training.

    python -m unet_scratch.features --run runs/dice IMAGE --out features/    # needs matplotlib

For one image (any size and format predict.py reads; prepared exactly as in training) this
runs two models: the run's trained ``best.pt`` and the same architecture at its initial weights
(``build_model`` with the run's seed: the very weights training started from), the latter with
BatchNorm in training mode, normalising each channel by this image's own statistics as the
first training step does: its running statistics start at mean 0 and variance 1, which would
not normalise at all (in eval mode the initial model's logits on a dataset frame have a standard
deviation of about 150 instead of about 4, and its probability map is saturated noise). Forward hooks
record the output of every encoder stage (stem, layer1-4) and every decoder block, and for each
the ``--channels`` most active channels (largest mean activation) are drawn, each scaled to its
own range. It writes

- ``features.png``: one row per stage, the initial model's channels left, the trained model's
  right, with the stage's output shape;
- ``prediction.png``: the image, both models' probability maps and the trained model's mask.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import read_image
from .engine import FLIPS, build_model
from .errors import ArgumentParser, UserError, exit_status, exit_with
from .files import check_folder, save_figure
from .inference import load_run, prepare

STAGES = [
    "stem",
    "layer1",
    "layer2",
    "layer3",
    "layer4",
    "decoder 0",
    "decoder 1",
    "decoder 2",
    "decoder 3",
    "decoder 4",
]


def stage_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the stages of :data:`STAGES` (the stem's is its ReLU)."""
    enc = model.encoder
    return [enc.relu, enc.layer1, enc.layer2, enc.layer3, enc.layer4, *model.decoder.blocks]


@torch.inference_mode()
def stage_outputs(
    model: nn.Module, x: torch.Tensor, batch_statistics: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every stage's output ``(C, h, w)`` for ``x (1, 3, S, S)``, and the probability map ``(S, S)``;
    BatchNorm uses its running statistics, or ``batch_statistics``: those of ``x`` and its three
    flips, a batch of four (its training mode, which also moves the running statistics: for a
    model used once); the outputs are ``x``'s. Everything else stays in eval mode: no dropout or
    dropped paths, no deep-supervision outputs."""
    outputs: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out[0].float()))
        for m in stage_modules(model)
    ]
    try:
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(batch_statistics)
        if batch_statistics:  # with its flips: at 32x32 the deepest map is 1x1, one value a channel
            x = torch.cat([x.flip(dims) if dims else x for dims in FLIPS])
        prob = torch.sigmoid(model(x).float())[0, 0]
    finally:
        for h in hooks:
            h.remove()
    return outputs, prob


def most_active(feature: torch.Tensor, k: int) -> list[tuple[int, np.ndarray]]:
    """The ``k`` channels of ``feature (C, h, w)`` with the largest mean, each scaled to [0, 1]."""
    means = feature.mean(dim=(1, 2))
    picked = means.topk(min(k, len(means))).indices.tolist()
    maps = []
    for c in picked:
        m = feature[c]
        lo, hi = m.min(), m.max()
        maps.append((c, ((m - lo) / (hi - lo)).numpy() if hi > lo else np.zeros(m.shape, np.float32)))
    return maps


def draw(
    image: np.ndarray, runs: dict[str, tuple[list[torch.Tensor], torch.Tensor]], k: int, out: Path
) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UserError("features needs matplotlib: pip install matplotlib (the [plot] extra)") from e
    names = list(runs)
    fig, axes = plt.subplots(len(STAGES), 2 * k, figsize=(2 * k * 1.25 + 1, len(STAGES) * 1.3))
    for row, stage in enumerate(STAGES):
        for side, name in enumerate(names):
            feature = runs[name][0][row]
            for j, (c, m) in enumerate(most_active(feature, k)):
                ax = axes[row, side * k + j]
                ax.imshow(m, cmap="magma", interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"ch {c}", fontsize=6.5, pad=1.5)
            if side == 0:
                c, h, w = feature.shape
                axes[row, 0].set_ylabel(f"{stage}\n{c}x{h}x{w}", fontsize=7.5)
    for side, name in enumerate(names):
        axes[0, side * k].annotate(
            f"{name}: the {k} most active channels",
            (0, 1.45),
            xycoords="axes fraction",
            fontsize=9,
            weight="bold",
        )
    fig.subplots_adjust(left=0.08, right=0.99, top=0.93, bottom=0.01, wspace=0.08, hspace=0.3)
    features_png = out / "features.png"
    save_figure(fig, features_png, "--out", dpi=90)

    fig, axes = plt.subplots(1, 2 + len(names), figsize=(3.2 * (2 + len(names)), 3.4))
    axes[0].imshow(image)
    axes[0].set_title("input (as the model sees it)", fontsize=9)
    for ax, name in zip(axes[1:], names):
        ax.imshow(runs[name][1].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"{name}: probability", fontsize=9)
    mask = runs[names[-1]][1].numpy() > 0.5
    shown = image.copy()
    shown[mask] = (0.5 * shown[mask] + 0.5 * np.array([255, 220, 0])).astype(np.uint8)
    axes[-1].imshow(shown)
    axes[-1].set_title(f"{names[-1]}: mask (p > 0.5)", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    prediction_png = out / "prediction.png"
    save_figure(fig, prediction_png, "--out", dpi=90)
    return [features_png, prediction_png]


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m unet_scratch.features", description=__doc__.splitlines()[0])
    p.add_argument("image", help="an image file (.tif, .png, .jpg, .bmp, .webp)")
    p.add_argument(
        "--run", required=True, help="a run folder (its best.pt is the trained model) or a checkpoint file"
    )
    p.add_argument("--out", default="features", help="folder for features.png and prediction.png")
    p.add_argument("--channels", type=int, default=4, help="most active channels shown per stage and model")
    args = p.parse_args(argv)
    return exit_status(lambda: draw_run(args))


def draw_run(args: argparse.Namespace) -> int:
    check_folder(args.out, "--out")  # before the work, not after it
    trained, config, _ = load_run(args.run)
    initial = build_model(config)  # the run's seed: the weights its training started from
    x = prepare(read_image(args.image, upright=True), config.input_size)[None].float() / 255
    runs = {
        "initial weights": stage_outputs(initial, x, batch_statistics=True),  # as step 1 sees them
        "trained": stage_outputs(trained, x),
    }
    image = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    for path in draw(image, runs, args.channels, Path(args.out)):
        print(f"-> {path}")
    return 0


if __name__ == "__main__":
    exit_with(main())
