"""Do the BatchNorm statistics a saved model carries hold it back? (docs/RESULTS.md)

    python benchmarks/bn_statistics.py exp/dice/tuned-f1-s47 exp/jaccard/tuned-f2-s48 ... [--data DIR]

A run's ``best.pt`` holds the weight average (``--ema``) with the BatchNorm running statistics
of the live model copied in: statistics collected under other weights, on augmented batches.
For each run (trained with ``--val-frames``) this scores its validation frames (mDice@0.5) with
the statistics re-estimated for the saved weights, in three ways, each a cumulative average over
batches of 8 in train mode (the batch size the model was trained with):

- ``saved``: as written by training (what evaluate.py scores);
- ``precise``: over the run's training frames without augmentation ("precise BN");
- ``precise-aug``: the same frames with the run's own augmentations, as training saw them;
- ``val``: over the validation frames themselves (AdaBN: adapting to new video without its
  masks; it uses the frames it is scored on, so it is a question, not a score to claim).

It prints one row per run and, per loss, each variant minus ``saved``: mean ± sd over the runs
and how many runs it wins.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet_scratch.augment import augment  # noqa: E402
from unet_scratch.data import load_frames, parse_frames  # noqa: E402
from unet_scratch.engine import amp_dtype, autocast, batch_indices, epoch_generator, evaluate  # noqa: E402
from unet_scratch.inference import load_run  # noqa: E402

VARIANTS = ("saved", "precise", "precise-aug", "val")


@torch.no_grad()
def with_batch_statistics(
    model: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    augmentations: str,
    amp: torch.dtype | None,
) -> torch.nn.Module:
    """A copy of ``model`` whose BatchNorm running mean/var are the cumulative average over
    batches of 8 of ``images (N, 3, S, S) uint8`` (augmented with ``augmentations`` unless "")."""
    m = copy.deepcopy(model)
    for module in m.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # None: an equal-weight average over every batch seen
    m.train()
    g = epoch_generator(0, 1000, torch.device("cpu"))
    for idx in batch_indices(len(images), 8, g):
        if len(idx) < 2:  # train-mode BatchNorm needs two values per channel
            continue
        x, y = images[idx].float().div_(255), masks[idx].float()
        if augmentations:
            x, y = augment(x, y, augmentations, g)
        with autocast(torch.device("cpu"), amp):
            m(x.contiguous(memory_format=torch.channels_last))
    return m.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders trained with --val-frames")
    p.add_argument("--data", default="", help="the frames' folder (default: each run's own)")
    args = p.parse_args()
    amp = amp_dtype(torch.device("cpu"), "auto")
    by_loss: dict[str, list[dict[str, float]]] = defaultdict(list)
    print(f"{'run':<40} {'epoch':>5} " + " ".join(f"{v:>11}" for v in VARIANTS))
    for run in args.runs:
        model, config, ckpt = load_run(run)
        model = model.to(memory_format=torch.channels_last)
        root = args.data or config.data
        train = load_frames(root, parse_frames(config.train_frames), config.input_size)
        val = load_frames(root, parse_frames(config.val_frames), config.input_size)
        sources = {
            "saved": model,
            "precise": with_batch_statistics(model, *train, "", amp),
            "precise-aug": with_batch_statistics(model, *train, config.augment, amp),
            "val": with_batch_statistics(model, *val, "", amp),
        }
        row = {name: evaluate(m, *val, amp)["dice"] for name, m in sources.items()}
        by_loss[config.loss].append(row)
        print(f"{run:<40} {ckpt['epoch']:>5} " + " ".join(f"{row[v]:>11.4f}" for v in VARIANTS), flush=True)
    print("\nminus saved, per loss: mean ± sd over runs (runs above saved / runs)")
    for loss, rows in by_loss.items():
        cells = []
        for v in VARIANTS[1:]:
            d = [r[v] - r["saved"] for r in rows]
            sd = statistics.stdev(d) if len(d) > 1 else 0.0
            cells.append(f"{v} {statistics.mean(d):+.3f} ± {sd:.3f} ({sum(x > 0 for x in d)}/{len(d)})")
        print(f"{loss:<9} " + "   ".join(cells))


if __name__ == "__main__":
    main()
