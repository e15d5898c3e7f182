"""A teaching view of the model: every stage's output shape and parameter count.

python -m unet_scratch.summary [--input-size 128]
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from .model import UNetResNet50


def count(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters())


@torch.inference_mode()
def stage_table(model: UNetResNet50, input_size: int = 128) -> list[tuple[str, tuple[int, ...], int]]:
    """``(stage, output shape, parameters)`` for a ``(1, 3, S, S)`` input, in data-flow order."""
    model.eval()
    x = torch.zeros(1, 3, input_size, input_size)
    enc = model.encoder
    rows = []
    stem = enc.relu(enc.bn1(enc.conv1(x)))
    rows.append(("encoder.stem (conv1-bn1-relu)", tuple(stem.shape), count(enc.conv1) + count(enc.bn1)))
    h = enc.maxpool(stem)
    rows.append(("encoder.maxpool", tuple(h.shape), 0))
    features = [stem]
    for name in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(enc, name)
        h = layer(h)
        features.append(h)
        rows.append((f"encoder.{name} ({len(layer)} bottlenecks)", tuple(h.shape), count(layer)))
    *skips, d = features
    for i, (block, skip) in enumerate(zip(model.decoder.blocks, [*skips[::-1], None])):
        d = block(d, skip)
        rows.append(
            (f"decoder.blocks.{i}" + (" (no skip)" if skip is None else ""), tuple(d.shape), count(block))
        )
    out = model.head(d)
    rows.append(("head (logits)", tuple(out.shape), count(model.head)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unet_scratch.summary", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--input-size", type=int, default=128, help="square input size, a multiple of 32")
    args = parser.parse_args(argv)
    if args.input_size < 32 or args.input_size % 32:
        print(
            f"error: --input-size must be a positive multiple of 32, got {args.input_size}", file=sys.stderr
        )
        return 2
    model = UNetResNet50()
    print(f"UNetResNet50, input (1, 3, {args.input_size}, {args.input_size})\n")
    print(f"{'stage':<36} {'output shape':<22} {'parameters':>12}")
    for name, shape, n in stage_table(model, args.input_size):
        print(f"{name:<36} {str(shape):<22} {n:>12,}")
    print()
    for name, part in (("encoder", model.encoder), ("decoder", model.decoder), ("head", model.head)):
        print(f"{name + ' total':<59} {count(part):>12,}")
    print(f"{'model total':<59} {count(model):>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
