"""``python evaluate.py``: score every trained run on the test frames, in one table.

    python evaluate.py                                 # every run under runs/, frames 429-612
    python evaluate.py --test-frames 364-428           # validation frames (when 429-612 are absent)
    python evaluate.py runs/dice runs/focal --tta --json results.json --overlays overlays/
    python evaluate.py --curves curves.png             # learning curves (needs matplotlib)

For each run the model is rebuilt from the config stored in its ``best.pt`` (so a run trained
at 64x64 is evaluated at 64x64), loaded with ``weights_only=True``, and scored per image at
threshold 0.5. The 95 % interval of the mean Dice is a percentile bootstrap over test images
(fixed seed). "soft" Dice/Jaccard are the reference report's formulas on probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import atomic_write_json, load_checkpoint, load_model_state
from .config import AMP_MODES, TrainConfig
from .data import describe_frames, load_frames, parse_frames
from .engine import amp_dtype, build_model, pick_device, predict
from .errors import ArgumentParser, UserError
from .metrics import SegmentationMeter
from .report import plot_curves, read_metrics, results_table, sort_runs, write_overlay_grid
from .synthetic import ensure_synthetic

BOOTSTRAP_SAMPLES = 2000


def bootstrap_ci(values: list[float], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` (resampling images)."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(samples, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def find_runs(paths: list[str], runs_root: str) -> list[Path]:
    """The run folders given, or every sub-folder of ``runs_root`` that looks like a run."""
    if paths:
        missing = [p for p in paths if not Path(p).is_dir()]
        if missing:
            raise UserError(f"run folder {missing[0]} does not exist: check the path")
        return [Path(p) for p in paths]
    root = Path(runs_root)
    if not root.is_dir():
        raise UserError(f"--runs {root} does not exist: train first (python train.py) or pass --runs DIR")
    runs = [
        d
        for d in sorted(root.iterdir())
        if d.is_dir()
        and not d.name.startswith(".")
        and any((d / f).exists() for f in ("config.json", "best.pt", "last.pt"))
    ]
    if not runs:
        raise UserError(f"--runs {root} holds no run folders (with config.json or best.pt): train first")
    return runs


def _run_loss(run_dir: Path) -> str:
    """The loss a run was trained with, from config.json (or its name) for reporting."""
    try:
        return json.loads((run_dir / "config.json").read_text())["loss"]
    except (OSError, ValueError, KeyError):
        return run_dir.name


def _train_seconds(run_dir: Path, ckpt: dict[str, Any]) -> float | None:
    rows = read_metrics(run_dir) or ckpt.get("history", [])
    return float(rows[-1]["elapsed_seconds"]) if rows and "elapsed_seconds" in rows[-1] else None


def score_run(
    run_dir: Path,
    data_for: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp_mode: str,
    tta: bool,
    frames: list[int],
    overlays: Path | None,
    n_overlays: int,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Predict the test frames with ``run_dir/best.pt`` and compute every reported number."""
    ckpt = load_checkpoint(run_dir / "best.pt")
    config = TrainConfig.from_dict(ckpt["config"])
    model = build_model(config)  # the architecture the run trained, then its weights
    load_model_state(model, ckpt["model"], run_dir / "best.pt")
    model = model.to(device, memory_format=torch.channels_last)
    images, masks = data_for(config.input_size)
    probs = predict(model, images, amp_dtype(device, amp_mode), tta=tta).cpu()
    meter = SegmentationMeter(threshold=threshold)
    meter.update(probs, masks)
    s = meter.summary()
    row = {
        "name": run_dir.name,
        "path": str(run_dir),
        "loss": config.loss,
        "input_size": config.input_size,
        "dice": s["dice"],
        "jaccard": s["iou"],
        "dice_ci95": list(bootstrap_ci(meter.dice)),
        "soft_dice": s["soft_dice"],
        "soft_jaccard": s["soft_jaccard"],
        "pooled_dice": s["pooled_dice"],
        "best_epoch": int(ckpt["epoch"]),
        "train_seconds": _train_seconds(run_dir, ckpt),
        "per_image": {str(n): {"dice": d, "jaccard": j} for n, d, j in zip(frames, meter.dice, meter.iou)},
    }
    overlap = set(frames) & set(parse_frames(config.train_frames))
    if overlap:
        row["warning"] = f"{len(overlap)} test frame(s) were training frames of {run_dir.name}"
    if overlays is not None:
        order = np.argsort(np.asarray(meter.dice), kind="stable")
        n = min(n_overlays, len(order))
        chosen = [*order[:n], *order[::-1][:n]] if len(order) > n else list(order)
        labels = [f"frame {frames[k]} Dice {meter.dice[k]:.2f}" for k in chosen]
        write_overlay_grid(
            images[chosen].numpy(),
            masks[chosen].numpy(),
            probs[chosen].numpy(),
            labels,
            overlays / f"{run_dir.name}.png",
        )
    return row


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="evaluate.py",
        description="Score trained runs on the test frames and print one markdown table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dirs", nargs="*", help="run folders (default: every run under --runs)")
    p.add_argument("--runs", default="runs", help="folder whose sub-folders are runs")
    p.add_argument("--data", default="data/CVC-ClinicDB", help="dataset folder, or 'synthetic'")
    p.add_argument("--test-frames", default="429-612", help="frames to score, e.g. 429-612")
    p.add_argument("--tta", action="store_true", help="average the 4 flip variants' probabilities")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="probability above which a pixel is polyp (analysis only: never tune it on test frames)",
    )
    p.add_argument("--json", default="", help="also write the numbers and per-image scores here")
    p.add_argument("--overlays", default="", help="write a PNG per run of the worst/best frames here")
    p.add_argument("--n-overlays", type=int, default=4, help="worst and best frames per overlay grid")
    p.add_argument("--curves", default="", help="draw learning curves of every run to this PNG")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--amp", default="auto", choices=AMP_MODES, help="mixed precision for inference")
    p.add_argument("--cache-dir", default="", help="decoded-frame cache (default: RUNS/.cache)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    run_dirs = find_runs(args.run_dirs, args.runs)
    if args.curves:
        try:
            print(f"learning curves -> {plot_curves(run_dirs, args.curves)}")
        except UserError as e:  # a missing optional extra must not stop the evaluation
            print(f"warning: {e}", file=sys.stderr)
    device = pick_device(args.device)
    frames = parse_frames(args.test_frames)
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(args.runs) / ".cache"
    root = ensure_synthetic(cache_dir) if args.data == "synthetic" else Path(args.data)
    loaded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def data_for(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if size not in loaded:  # one decode per input size, shared by every run
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded[size] = load_frames(root, frames, size, cache_dir, "--test-frames")
        return loaded[size]

    overlays = Path(args.overlays) if args.overlays else None
    rows = []
    for run_dir in run_dirs:
        if not (run_dir / "best.pt").is_file():
            rows.append(
                {
                    "name": run_dir.name,
                    "path": str(run_dir),
                    "loss": _run_loss(run_dir),
                    "error": "no best.pt (not trained past epoch 1?)",
                }
            )
            continue
        rows.append(
            score_run(
                run_dir,
                data_for,
                device,
                args.amp,
                args.tta,
                frames,
                overlays,
                args.n_overlays,
                args.threshold,
            )
        )
    rows = sort_runs(rows)

    print(
        f"test frames {describe_frames(frames)} ({len(frames)} images), threshold {args.threshold}, "
        f"TTA {'on (4 flips)' if args.tta else 'off'}; Dice/Jaccard = mean per image\n"
    )
    print(results_table(rows))
    for r in rows:
        if r.get("warning"):
            print(f"warning: {r['warning']}: those scores are not test scores", file=sys.stderr)
    scored = [r for r in rows if not r.get("error")]
    if scored:
        best = max(scored, key=lambda r: r["dice"])
        print(f"\nbest by test Dice: {best['loss']} ({best['name']}), {best['dice']:.4f}")
    if args.overlays:
        print(
            f"overlays -> {args.overlays}/ (rows: {args.n_overlays} worst then best frames; "
            "contours: ground truth green, prediction yellow)"
        )
    if args.json:
        report = {"test_frames": args.test_frames, "threshold": args.threshold, "tta": args.tta, "runs": rows}
        atomic_write_json(report, args.json)
        print(f"json -> {args.json}")
    return 0 if scored else 2


if __name__ == "__main__":
    sys.exit(main())
