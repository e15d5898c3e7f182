"""``python evaluate.py``: score trained runs on frames they never trained on, in one table.

    python evaluate.py                                 # every run under runs/, test frames 429-612
    python evaluate.py --runs runs/synthetic           # the quick start's runs, on their own data
    python evaluate.py --test-frames 364-428           # validation frames (when 429-612 are absent)
    python evaluate.py runs/dice runs/focal --tta --json results.json --overlays overlays/
    python evaluate.py --ensemble runs-s47/* runs-s48/*   # each loss's two seeds as one model
    python evaluate.py --full-res                      # also score at each frame's original size
    python evaluate.py --curves curves.png             # learning curves (needs matplotlib)

For each run the model is rebuilt from the config stored in its ``best.pt`` (so a run trained
at 64x64 is evaluated at 64x64), loaded with ``weights_only=True``, and scored per image at
threshold 0.5. The data are those the runs were trained on (``--data`` to choose), and a run is
only scored on data whose frames are the ones it trained on (``--allow-other-data`` to insist).
The 95 % interval of the mean Dice is a percentile bootstrap over images (fixed seed). "soft"
Dice/Jaccard are the reference report's formulas on probabilities.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import postprocess
from .checkpoint import load_checkpoint
from .config import AMP_MODES, TrainConfig
from .data import (
    IMAGE_DIR,
    MASK_DIR,
    describe_frames,
    find_pairs,
    frame_fingerprint,
    load_frames,
    parse_frames,
    read_mask,
    select_pairs,
)
from .engine import amp_dtype, pick_device, predict
from .errors import ArgumentParser, MissingExtra, UserError, exit_status, exit_with, listed
from .files import atomic_write_json, check_file, check_folder
from .inference import (
    FOCAL_TEMPERATURE,
    add_mask_options,
    check_run_folder,
    load_runs,
    mask_options,
    nearest_runs,
    temper,
    to_size,
)
from .metrics import SegmentationMeter
from .progress import counted
from .report import (
    first_given,
    loss_label,
    plot_curves,
    qualifiers,
    read_config,
    read_metrics,
    results_table,
    sort_runs,
    write_overlay_grid,
)
from .runfolder import is_run, run_files
from .synthetic import ensure_synthetic, synthetic_root

BOOTSTRAP_SAMPLES = 2000
TEST_FRAMES = "429-612"  # the assignment's test split


def bootstrap_ci(values: list[float], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` (resampling images)."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(samples, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- runs and their data


def each_once(folders: list[Path]) -> list[Path]:
    """``folders`` in order without a folder met before under another spelling (``a/x`` and
    ``b/../a/x``, a symlink): overlapping globs such as ``exp/*/tuned-f1-s47 exp/dice/*`` name
    some twice. The first spelling stays (:func:`~unet_scratch.report.first_given`)."""
    return [f for i, (f, j) in enumerate(zip(folders, first_given(folders))) if j == i]


def find_runs(paths: list[str], runs_root: str) -> list[Path]:
    """The run folders given, or every sub-folder of ``runs_root`` that is a run (or
    ``runs_root`` itself when it is one); each folder once (:func:`each_once`)."""
    if paths:
        for p in map(Path, paths):
            check_run_folder(p)
            try:
                held = [] if is_run(p) else [d for d in sorted(p.iterdir()) if is_run(d)]
            except OSError:  # a folder we may not look into: scoring says what it lacks
                held = []
            if held:  # `evaluate.py runs/`: the folder of runs, not a run without its best.pt
                command = f"python evaluate.py --runs {shlex.quote(str(p))}"
                raise UserError(
                    f"{p} holds runs, it is not one: {command} scores them all, "
                    f"or name them ({listed(held, most=2)})"
                )
        return each_once([Path(p) for p in paths])
    root = Path(runs_root)
    if root.exists():  # a checkpoint or another file: named as such, with its run's folder
        check_run_folder(root)
    if not root.is_dir():
        # the folders of runs beside the path meant (``--runs runs/synthetic`` for ``--runs runs/synthtic``)
        base, found = nearest_runs(root)
        held = sorted({run.parent for run in found})
        fix = (
            f"check the path; folders of runs in {base}: {listed([shlex.quote(str(f)) for f in held])}"
            if held
            else "train first (python train.py) or pass --runs DIR"
        )
        raise UserError(f"--runs {root} does not exist: {fix}")
    if is_run(root):
        return [root]
    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    runs = [d for d in folders if is_run(d)]
    if not runs:
        nested = [d for d in folders if any(is_run(r) for r in d.iterdir())]
        hint = f"; {nested[0]} holds runs: python evaluate.py --runs {nested[0]}" if nested else ""
        raise UserError(
            f"--runs {root} holds no run folders (with config.json or best.pt): train first{hint}"
        )
    return each_once(runs)


def run_info(run_dir: Path) -> dict[str, Any]:
    """What a run folder says about its run: its ``config.json`` (the settings, and the data's
    latest place), over the config ``best.pt`` carries (a ``best.pt`` copied into a folder of its
    own has no config.json); the data fingerprint is ``best.pt``'s where it has one, since that
    is the model scored (a run resumed onto other data keeps a ``best.pt`` of an earlier session
    when no later epoch beat it); ``{}`` when neither can be read (scoring says why)."""
    info = read_config(run_dir)
    if not (run_dir / "best.pt").is_file():
        return info
    try:
        ckpt = load_checkpoint(run_dir / "best.pt", mmap=True)  # maps the weights, reads the rest
    except UserError:
        return info
    config = ckpt.get("config")
    if not isinstance(config, dict):
        return info
    run = dict(info.get("run", {}))
    if ckpt.get("data_check"):  # with the data it names, for the message
        run["data_check"] = {**ckpt["data_check"], "data": config.get("data")}
    return {**config, **info, **({"run": run} if run else {})}


def data_of_runs(configs: dict[Path, dict[str, Any]]) -> str:
    """The one dataset the runs were trained on (``--data`` of train.py, from ``configs``: each
    run folder's :func:`run_info`, in order), as the first run spells it; ``DIR`` and ``DIR/``
    (or ``a/../DIR``, a link to it) are one dataset."""

    def same(data: str) -> str:
        if data == "synthetic":
            return data
        return str(Path(data).resolve()) if Path(data).exists() else os.path.normpath(data)

    by_data: dict[str, tuple[str, list[str]]] = {}  # the folder -> (its first spelling, runs)
    for run_dir, config in configs.items():
        data = config.get("data")
        if data:
            by_data.setdefault(same(data), (data, []))[1].append(run_dir.name)
    if not by_data:
        return TrainConfig().data
    if len(by_data) > 1:
        listed = "; ".join(f"{d}: {', '.join(names)}" for d, names in by_data.values())
        raise UserError(
            f"these runs were trained on different data ({listed}): pass --data, or score them separately"
        )
    return next(iter(by_data.values()))[0]


def other_data_reason(info: dict[str, Any], data: str, root: Path) -> str | None:
    """Why ``root`` is not the data the run trained on, or None when it is (or cannot be told).

    The run recorded a fingerprint of its first training frame's pixels; the same frame of
    ``root`` must match it. A run saved before the fingerprint existed, or data without that
    frame, cannot be checked and is scored.
    """
    check = info.get("run", {}).get("data_check") or {}
    if not check.get("sha256"):
        return None
    mine = frame_fingerprint(root, check["frame"])
    if mine is None or mine == check["sha256"]:
        return None
    trained = check.get("data") or info.get("data", "other data")  # the checkpoint's own, where known
    return (
        f"trained on {trained}, not {data} (frame {check['frame']} differs): "
        "not scored; --allow-other-data scores it anyway"
    )


def frames_role(frames: list[int], config: TrainConfig) -> str:
    """What ``frames`` are to a run: training, (partly) validation, test (429-612) or held-out."""
    frames_set = set(frames)
    if frames_set & set(parse_frames(config.train_frames)):
        return "training"
    val = set(parse_frames(config.val_frames))
    if frames_set & val:  # any frame that chose the run's epoch makes the scores optimistic
        return "validation" if frames_set <= val else "partly-validation"
    return "test" if frames_set <= set(parse_frames(TEST_FRAMES)) else "held-out"


def members_role(roles: list[str]) -> str:
    """The frames' role to an ensemble, from its members' (:func:`frames_role`): training if they
    trained any member, validation where they chose every member's epoch, partly validation
    where they chose some."""
    if "training" in roles:
        return "training"
    if len(set(roles)) == 1:
        return roles[0]
    if {"validation", "partly-validation"} & set(roles):
        return "partly-validation"
    return roles[0]


# ----------------------------------------------------------------------------- scoring


def _train_seconds(run_dir: Path, ckpt: dict[str, Any]) -> float | None:
    rows = read_metrics(run_dir) or ckpt.get("history", [])
    return float(rows[-1]["elapsed_seconds"]) if rows and "elapsed_seconds" in rows[-1] else None


def _total_seconds(seconds: list[float | None]) -> float | None:
    """The training time of all members together (None when one of them is unknown)."""
    return None if None in seconds else sum(seconds)


def member_label(run_dir: Path) -> str:
    """``parent/name`` of a run folder: members of an ensemble often share a name (runs-s47/dice,
    runs-s48/dice)."""
    return f"{run_dir.parent.name}/{run_dir.name}" if run_dir.parent.name else run_dir.name


def name_runs_apart(
    rows: list[dict[str, Any]], groups: list[list[Path]], configs: dict[Path, dict[str, Any]]
) -> None:
    """Give each single run's row (``rows[i]`` scores ``groups[i]``; ``configs``: each run's
    :func:`run_info`) a name no other row of its loss shares: the same recipe in two folders
    (``exp/dice/tuned-f1-s47`` at 20 epochs and ``exp/e40/dice/tuned-f1-s47`` at 40) gets its
    epoch count, then its path (:func:`qualifiers`). An ensemble's row already names its members."""
    singles = [(row, group[0]) for row, group in zip(rows, groups) if len(group) == 1]
    dirs = [d for _, d in singles]
    keys = [(row["loss"], row["name"]) for row, _ in singles]
    for (row, _), q in zip(singles, qualifiers(keys, dirs, [configs[d] for d in dirs])):
        row["name"] += q


def overlay_files(groups: list[list[Path]], configs: dict[Path, dict[str, Any]], folder: Path) -> list[Path]:
    """One PNG in ``folder`` per row (``groups[i]``: one run, or an ensemble's runs), none
    written over another: the run's folder name (``dice.png`` for ``runs/dice``) or
    ``LOSS-ensemble.png``; ``LOSS-NAME.png`` where two rows share that name (``exp/dice/tuned-f1-s47``
    and ``exp/jaccard/tuned-f1-s47``), then ``-2``, ``-3`` where they still do. The JSON report
    gives each row's file (``configs``: each run's :func:`run_info`)."""
    losses = [configs[g[0]].get("loss", g[0].name) for g in groups]
    stems = [g[0].name if len(g) == 1 else f"{loss}-ensemble" for g, loss in zip(groups, losses)]
    shared = {s for s in stems if stems.count(s) > 1}
    stems = [f"{loss}-{s}" if s in shared and len(g) == 1 else s for g, loss, s in zip(groups, losses, stems)]
    files, used = [], set()
    for stem in stems:
        name, k = stem, 1
        while name in used:
            k += 1
            name = f"{stem}-{k}"
        used.add(name)
        files.append(folder / f"{name}.png")
    return files


def postprocessed(
    probs: torch.Tensor, threshold: float, steps: list[tuple[str, float]]
) -> torch.Tensor | None:
    """The thresholded masks ``(N, 1, H, W)`` after ``--postprocess`` (None when there is none)."""
    if not steps:
        return None
    masks = [postprocess.apply(p[0].numpy() > threshold, steps) for p in probs]
    return torch.from_numpy(np.stack(masks))[:, None]


def per_image(frames: list[int], meter: SegmentationMeter) -> dict[str, dict[str, float]]:
    """``{frame: {dice, jaccard, tp, fp, fn}}`` in the order the meter scored them: the scores and
    the pixel counts behind them (true positives, false positives, false negatives), from which
    a group of frames' precision and recall follow (benchmarks/by_size.py)."""
    tp, fp, fn = torch.cat(meter.counts, dim=1).tolist()
    scores = zip(frames, meter.dice, meter.iou, tp, fp, fn)
    return {
        str(n): {"dice": d, "jaccard": j, "tp": int(t), "fp": int(p), "fn": int(f)}
        for n, d, j, t, p, f in scores
    }


def full_resolution_scores(
    probs: torch.Tensor,
    mask_paths: list[Path],
    frames: list[int],
    threshold: float,
    steps: list[tuple[str, float]] = (),
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Scores at each frame's own size: ``probs (N, 1, S, S)`` resized back (bilinear, as
    predict.py does) and then tempered, against the masks read at full size and binarised at
    > 127."""
    meter = SegmentationMeter(threshold=threshold)
    for prob, path in zip(probs, mask_paths):
        mask = torch.from_numpy(read_mask(path) > 127)[None, None]
        full = temper(to_size(prob[None], *mask.shape[-2:]), temperature)
        meter.update(full, mask, postprocessed(full, threshold, steps))
    s = meter.summary()
    return {
        "dice": s["dice"],
        "jaccard": s["iou"],
        "pooled_dice": s["pooled_dice"],
        "per_image": per_image(frames, meter),
    }


def score_run(
    run_dirs: list[Path],
    data_for: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp_mode: str,
    tta: bool,
    frames: list[int],
    overlay: Path | None,
    n_overlays: int,
    threshold: float = 0.5,
    mask_paths: list[Path] | None = None,
    steps: list[tuple[str, float]] = (),
    temperature: float | None = None,
) -> dict[str, Any]:
    """Predict ``frames`` with ``run_dir/best.pt`` of the one run in ``run_dirs`` and compute
    every reported number; with ``mask_paths`` also the scores at the frames' original size.
    Several runs are scored as one model, the mean of their probabilities (:class:`Ensemble`,
    ``--ensemble``), each with its own temperature."""
    model, configs, ckpts, temperature = load_runs(run_dirs, temperature)
    name = run_dirs[0].name
    if len(run_dirs) > 1:
        name = f"ensemble of {len(run_dirs)}: " + ", ".join(map(member_label, run_dirs))
    config = configs[0]
    model = model.to(device, memory_format=torch.channels_last)
    images, masks = data_for(config.input_size)
    raw = predict(model, images, amp_dtype(device, amp_mode), tta=tta).cpu()
    probs = temper(raw, temperature)
    preds = postprocessed(probs, threshold, steps)
    meter = SegmentationMeter(threshold=threshold)
    meter.update(probs, masks, preds)
    s = meter.summary()
    roles = [frames_role(frames, c) for c in configs]
    row = {
        "name": name,
        "path": ", ".join(map(str, run_dirs)),
        "loss": config.loss,
        "input_size": config.input_size,
        "temperature": temperature if len(run_dirs) == 1 else model.temperatures,
        "frames_role": members_role(roles),
        "dice": s["dice"],
        "jaccard": s["iou"],
        "dice_ci95": list(bootstrap_ci(meter.dice)),
        "soft_dice": s["soft_dice"],
        "soft_jaccard": s["soft_jaccard"],
        "pooled_dice": s["pooled_dice"],
        "best_epoch": int(ckpts[0]["epoch"]) if len(run_dirs) == 1 else [int(c["epoch"]) for c in ckpts],
        "train_seconds": _total_seconds([_train_seconds(r, c) for r, c in zip(run_dirs, ckpts)]),
        "per_image": per_image(frames, meter),
    }
    if mask_paths is not None:
        row["full_res"] = full_resolution_scores(raw, mask_paths, frames, threshold, steps, temperature)
    for run, c, role in zip(run_dirs, configs, roles):
        if role == "training":
            overlap = set(frames) & set(parse_frames(c.train_frames))
            row["warning"] = f"{len(overlap)} of the scored frames were training frames of {run}"
            break
    if overlay is not None:
        order = np.argsort(np.asarray(meter.dice), kind="stable")
        n = min(n_overlays, len(order))
        chosen = [*order[:n], *order[::-1][:n]] if len(order) > n else list(order)
        labels = [f"frame {frames[k]} Dice {meter.dice[k]:.2f}" for k in chosen]
        write_overlay_grid(
            images[chosen].numpy(),
            masks[chosen].numpy(),
            (probs > threshold if preds is None else preds)[chosen].numpy(),  # the masks scored
            labels,
            overlay,
        )
        row["overlay"] = str(overlay)
    return row


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="evaluate.py",
        description="Score trained runs on frames they did not train on and print one markdown table.",
    )
    p.add_argument("run_dirs", nargs="*", help="run folders (default: every run under --runs)")
    p.add_argument("--runs", default="runs", help="folder whose sub-folders are runs (or one run folder)")
    p.add_argument(
        "--data",
        help="dataset folder, or 'synthetic' (default: the data the runs were trained on, from config.json)",
    )
    p.add_argument("--test-frames", default=TEST_FRAMES, help="frames to score, e.g. 429-612 or 364-428")
    p.add_argument(
        "--allow-other-data",
        action="store_true",
        help="score runs even on data other than what they were trained on",
    )
    p.add_argument("--tta", action="store_true", help="average the 4 flip variants' probabilities")
    p.add_argument(
        "--ensemble",
        action="store_true",
        help="score the runs of each loss as one model, the mean of their probabilities "
        "(e.g. the same command trained with --seed 47 and --seed 48): one row per loss",
    )
    add_mask_options(
        p, "probability above which a pixel is polyp (analysis only: never tune it on test frames)"
    )
    p.add_argument(
        "--full-res",
        action="store_true",
        help="also score at each frame's original size (probabilities resized back, as predict.py does)",
    )
    p.add_argument("--json", help="also write the numbers and per-image scores to this file")
    p.add_argument("--overlays", help="write a PNG per run of its worst and best frames into this folder")
    p.add_argument("--n-overlays", type=int, default=4, help="worst and best frames per overlay grid")
    p.add_argument("--curves", help="draw learning curves of every run to this PNG")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--amp", default="auto", choices=AMP_MODES, help="mixed precision for inference")
    p.add_argument("--cache-dir", help="decoded-frame cache (default: RUNS/.cache)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status(lambda: run(args))


def describe_role(roles: set[str], frames: list[int]) -> tuple[str, str]:
    """The table's title line and the word for the scores ("test", "validation", ...)."""
    what = f"frames {describe_frames(frames)} ({counted(len(frames), 'image')})"
    if not roles:  # no run was scored: what the frames are to a run is not known
        return f"{what}: no run could be scored", "none"
    if roles == {"test"}:
        return f"test {what}", "test"
    if roles == {"validation"}:
        return (
            f"validation {what}: they selected the epoch or the recipe, so these scores are optimistic "
            "and are not test scores",
            "validation",
        )
    if "other-data" in roles:
        return (
            f"{what} of data that runs were not trained on (--allow-other-data): neither their "
            "training nor their test frames, and not test scores",
            "other-data",
        )
    if "training" in roles:
        return f"{what}, training frames among them: these are not test scores", "training-frame"
    if roles & {"validation", "partly-validation"}:
        return (
            f"{what}, some of them validation frames: they selected the epoch or the recipe, so these "
            "scores are optimistic and are not test scores",
            "partly-validation",
        )
    return f"{what}, held out of training (not the test split {TEST_FRAMES})", "held-out"


def run(args: argparse.Namespace) -> int:
    run_dirs = find_runs(args.run_dirs, args.runs)
    configs = {r: run_info(r) for r in run_dirs}  # each config.json read once
    data = args.data or data_of_runs(configs)
    given_runs = bool(args.run_dirs) or is_run(Path(args.runs))
    runs_root = run_dirs[0].parent if given_runs else Path(args.runs)  # where train.py cached frames
    cache_dir = Path(args.cache_dir) if args.cache_dir else runs_root / ".cache"
    root = synthetic_root(cache_dir) if data == "synthetic" else Path(data)  # made below if need be
    # an output path that cannot be written stops the command here, not after the scoring; nor
    # may an output replace a file the command reads (a run's checkpoint or config) or go
    # into the data's own folders (replace a frame, or add one)
    data_folders = [root / IMAGE_DIR, root / MASK_DIR]
    if args.json is not None:  # "" too: an empty path is refused, not ignored
        check_file(args.json, "--json", inputs=run_files(run_dirs), keep_out=data_folders)
    if args.curves is not None:
        check_file(args.curves, "--curves", figure=True, keep_out=data_folders)
    if args.overlays is not None:
        check_folder(args.overlays, "--overlays", keep_out=data_folders)
    if args.cache_dir is not None:
        check_folder(args.cache_dir, "--cache-dir", keep_out=data_folders)
    if args.curves:
        try:
            print(f"learning curves -> {plot_curves(run_dirs, args.curves)}")
        except MissingExtra as e:  # a missing optional extra must not stop the evaluation
            print(f"warning: {e}", file=sys.stderr)
    device = pick_device(args.device)
    frames = parse_frames(args.test_frames)
    steps = mask_options(args)
    if data == "synthetic":
        ensure_synthetic(cache_dir)
    mask_paths = None
    if args.full_res:
        mask_paths = [m for _, _, m in select_pairs(find_pairs(root), frames, "--test-frames", root)]
    loaded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def data_for(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if size not in loaded:  # one decode per input size, shared by every run
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded[size] = load_frames(root, frames, size, cache_dir, "--test-frames")
        return loaded[size]

    groups = [[r] for r in run_dirs]
    if args.ensemble:  # one model per loss: its runs' probabilities averaged
        by_loss: dict[str, list[Path]] = {}
        for run_dir in run_dirs:
            by_loss.setdefault(configs[run_dir].get("loss", run_dir.name), []).append(run_dir)
        groups = list(by_loss.values())
    overlays = overlay_files(groups, configs, Path(args.overlays)) if args.overlays else [None] * len(groups)
    rows = []
    for group, overlay in zip(groups, overlays):
        problems = []
        for run_dir in group:
            problem = None if (run_dir / "best.pt").is_file() else "no best.pt (not trained past epoch 1?)"
            if problem is None and not args.allow_other_data:
                problem = other_data_reason(configs[run_dir], data, root)
            if problem:
                problems.append(problem if len(group) == 1 else f"{member_label(run_dir)}: {problem}")
        if problems:
            info = configs[group[0]]
            rows.append(
                {
                    "name": group[0].name if len(group) == 1 else f"ensemble of {len(group)}",
                    "path": ", ".join(map(str, group)),
                    "loss": info.get("loss", group[0].name),
                    "error": problems[0],
                }
            )
            continue
        row = score_run(
            group,
            data_for,
            device,
            args.amp,
            args.tta,
            frames,
            overlay,
            args.n_overlays,
            args.threshold,
            mask_paths,
            steps,
            args.temperature,
        )
        if args.allow_other_data and any(other_data_reason(configs[r], data, root) for r in group):
            # another dataset's frame numbers say nothing of the run's training or test frames
            row["frames_role"] = "other-data"
            row.pop("warning", None)
        rows.append(row)
    bases = {id(r): r["name"] for r in rows}  # before name_runs_apart adds ", 40 epochs" or a path
    name_runs_apart(rows, groups, configs)
    rows = sort_runs(rows)
    scored = [r for r in rows if not r.get("error")]
    title, role = describe_role({r["frames_role"] for r in scored}, frames)
    temperature = f"{FOCAL_TEMPERATURE:g} for focal runs, else 1"  # each run's default
    if args.temperature is not None:
        temperature = f"{args.temperature:g}"
    print(
        f"{data}: {title}\nthreshold {args.threshold}, temperature {temperature}, "
        f"TTA {'on (4 flips)' if args.tta else 'off'}, "
        f"post-processing {args.postprocess}; "
        f"Dice/Jaccard = mean per image at the run's input size"
        + ("; full res = at each frame's original size" if args.full_res else "")
        + "\n"
    )
    print(results_table(rows, full_res=args.full_res))
    for r in rows:
        if r.get("warning"):
            print(f"warning: {r['warning']}: those scores are not test scores", file=sys.stderr)
    if scored:
        best = max(scored, key=lambda r: r["dice"])
        # named as in the curves legend: the folder's label, then what name_runs_apart added
        base = bases[id(best)]
        label = loss_label(best["loss"], base) + best["name"][len(base) :]
        print(f"\nbest by {role} Dice: {label}, {best['dice']:.4f}")
    if args.overlays:
        print(
            f"overlays -> {args.overlays}/ (rows: {args.n_overlays} worst then best frames; "
            "contours: ground truth green, prediction yellow)"
        )
    if args.json:
        report = {
            "data": data,
            "test_frames": args.test_frames,
            "frames_role": role,
            "threshold": args.threshold,
            "temperature": args.temperature,
            "tta": args.tta,
            "postprocess": args.postprocess,
            "resolution": "input size" + (" and full (each row's full_res)" if args.full_res else ""),
            "runs": rows,
        }
        atomic_write_json(report, args.json, "--json")
        print(f"json -> {args.json}")
    if not scored:  # the table says why per run; a script reading stderr gets the line too
        print(f"error: no run could be scored ({rows[0]['name']}: {rows[0]['error']})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    exit_with(main())
