"""``python train.py``: train the ResNet50-UNet with one loss, or all four.

    python train.py --loss jaccard                         # CVC-ClinicDB in data/CVC-ClinicDB
    python train.py --loss all --data synthetic            # no download needed
    python train.py --loss dice --resume                   # continue runs/dice from last.pt

By default frames 1-428 train and the last epoch is kept; ``--train-frames 1-363
--val-frames 364-428`` holds out the last three training video sequences for validation. The
test frames 429-612 are never read here, they belong to evaluate.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .augment import AUGMENTATIONS
from .checkpoint import (
    init_checkpoint_path,
    load_checkpoint,
    load_encoder_weights,
    load_init_weights,
    load_model_state,
)
from .config import AMP_MODES, KEEP, LOSS_NAMES, OPTIMIZERS, PRESETS, SCHEDULES, SKIPS, TrainConfig
from .data import describe_frames, frame_fingerprint, load_frames, parse_frames
from .distributed import DistContext, barrier, check_batch, device_for, init_from_env, main_first, shutdown
from .engine import Diverged, amp_dtype, batch_indices, build_model, fit, pick_device, precision_name
from .errors import ArgumentParser, UserError, exit_status, exit_with
from .files import check_folder, make_folder
from .losses import FOCAL_NORMALIZE
from .model import NORMALIZATIONS
from .progress import counted
from .report import read_config
from .synthetic import ensure_synthetic

SYNTHETIC_OUT = "runs/synthetic"  # where --data synthetic runs go unless --out says otherwise

# settings that may differ between a run and its --resume: where and how it runs, not the recipe;
# another device or CPU thread count still rounds differently, so the rest of the run then
# parts from an uninterrupted one (plan_run warns about the thread count)
RESUME_FREE = {
    "device", "threads", "out", "name", "cache_dir", "data", "compile", "checkpoint_every", "keep",
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = ArgumentParser(
        prog="train.py",
        description="Train a ResNet50-UNet for polyp segmentation (CVC-ClinicDB).",
    )
    p.add_argument(
        "--loss",
        default=d.loss,
        choices=[*LOSS_NAMES, "all"],
        help="training loss; 'all' trains the four from the same initial weights",
    )
    p.add_argument(
        "--data", default=d.data, help="dataset folder with Original/ and 'Ground Truth/', or 'synthetic'"
    )
    p.add_argument("--train-frames", default=d.train_frames, help="frames to train on, e.g. 1-363")
    p.add_argument(
        "--val-frames",
        default=d.val_frames,
        help="frames to validate on each epoch (best.pt = best val IoU); "
        "'none' trains without validation and keeps the last epoch",
    )
    p.add_argument(
        "--test-frames",
        default="429-612",
        help="the held-out test frames: never read here, only kept apart from train/val",
    )
    p.add_argument(
        "--allow-overlap", action="store_true", help="allow train, validation and test frames to overlap"
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training frames")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    p.add_argument(
        "--input-size",
        type=int,
        default=d.input_size,
        help="frames are resized to SIZE x SIZE (a multiple of 32)",
    )
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seed", type=int, default=d.seed, help="seeds the initial weights, batch order and augmentations"
    )
    seeds.add_argument(
        "--seeds",
        type=parse_seeds,
        help="comma list, e.g. 47,48,49: train one run per seed (folders NAME-s<seed>), to use as "
        "one model with evaluate.py --ensemble and predict.py --run A --run B",
    )
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS, help="optimiser")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="weight decay")
    p.add_argument(
        "--adam-beta2",
        type=float,
        default=d.adam_beta2,
        help="Adam/AdamW decay of the squared-gradient average (remembers ~1/(1 - B) steps)",
    )
    p.add_argument(
        "--schedule",
        default=d.schedule,
        choices=SCHEDULES,
        help="learning-rate schedule: constant, or cosine decay to 0 over the run",
    )
    p.add_argument(
        "--warmup-epochs", type=float, default=d.warmup_epochs, help="linear learning-rate warm-up"
    )
    p.add_argument(
        "--augment",
        default=d.augment,
        help=f"comma list of {', '.join(AUGMENTATIONS)} (applied on the device), or none",
    )
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0: off)")
    p.add_argument(
        "--ema",
        type=float,
        default=d.ema,
        help="decay of a weight average used for validation and best.pt, e.g. 0.999 (0: off)",
    )
    p.add_argument(
        "--zero-init-residual",
        action="store_true",
        help="start each residual block as the identity (last BN scale 0)",
    )
    p.add_argument(
        "--normalization",
        choices=NORMALIZATIONS,
        help=f"input scaling inside the model: none, imagenet (fixed constants) or image (each image's "
        f"channels to mean 0, std 1); default: {d.normalization}, or imagenet with --encoder-weights",
    )
    p.add_argument(
        "--encoder-weights",
        default=d.encoder_weights,
        help="start the encoder from a torchvision ResNet50 checkpoint file (resnet50-*.pth, fc.* "
        "dropped) instead of random initialisation",
    )
    p.add_argument(
        "--init-from",
        default=d.init_from,
        metavar="RUN",
        help="fine-tune: start every weight from a trained run (its folder, i.e. its best.pt, or a "
        "checkpoint file; from last.pt its weight average) instead of random initialisation; the "
        "model settings must match its own",
    )
    p.add_argument(
        "--skips",
        default=d.skips,
        choices=SKIPS,
        help="decoder skip connections: all, or none (an ablation: the U without its skips)",
    )
    p.add_argument(
        "--drop-path",
        type=float,
        default=d.drop_path,
        help="stochastic depth: the deepest encoder block skips its residual branch with this "
        "probability, the others linearly less (0: off)",
    )
    p.add_argument(
        "--head-dropout", type=float, default=d.head_dropout, help="channel dropout before the head (0: off)"
    )
    p.add_argument(
        "--head-prior",
        type=float,
        default=d.head_prior,
        help="start the head at this polyp probability on every pixel (RetinaNet's prior "
        "initialisation, e.g. 0.1; 0: the kaiming head; --init-from and --resume load the head instead)",
    )
    p.add_argument(
        "--deep-supervision",
        action="store_true",
        help="auxiliary heads on decoder blocks 1-3 with losses at 1/8, 1/4, 1/2 resolution (training only)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="start from a named recipe (reference: the report's Adam 1e-4 + flips); "
        "flags given explicitly still win",
    )
    p.add_argument("--smooth", type=float, default=d.smooth, help="Dice/Jaccard smoothing constant")
    p.add_argument(
        "--loss-reduction",
        default=d.loss_reduction,
        choices=("batch", "image"),
        help="Dice/Jaccard ratio over the whole batch or per image",
    )
    p.add_argument(
        "--focal-alpha",
        type=float,
        default=d.focal_alpha,
        help="focal loss: weight of polyp pixels (background gets 1 - alpha)",
    )
    p.add_argument(
        "--combined-focal-alpha",
        type=float,
        default=d.combined_focal_alpha,
        help="focal weight of polyp pixels inside the combined loss",
    )
    p.add_argument("--focal-gamma", type=float, default=d.focal_gamma, help="focal exponent")
    p.add_argument(
        "--jaccard-log",
        action="store_true",
        help="the Jaccard loss (alone and in combined) as -log(IoU) instead of 1 - IoU",
    )
    p.add_argument(
        "--jaccard-lovasz",
        action="store_true",
        help="the Jaccard loss (alone and in combined) as the Lovász hinge on the logits",
    )
    p.add_argument(
        "--focal-normalize",
        default=d.focal_normalize,
        choices=FOCAL_NORMALIZE,
        help="focal loss (alone and in combined): mean over pixels, or per image over its polyp pixels",
    )
    p.add_argument("--device", default=d.device, help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N")
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="CPU threads for torch, per process (0: torch's own count, OMP_NUM_THREADS or one per "
        "core); on some CPUs the count changes the arithmetic, so a run is repeated exactly only with "
        "the same count (config.json's run.threads records it)",
    )
    p.add_argument(
        "--amp",
        default=d.amp,
        choices=AMP_MODES,
        help="mixed precision: auto = bf16 on CUDA/CPUs that support it, fp16 on older GPUs",
    )
    p.add_argument(
        "--no-channels-last",
        action="store_true",
        help="keep NCHW memory layout (channels_last is faster on CPU and GPU)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model for training (compiles for a minute or more at the start)",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun: BatchNorm statistics over the global batch (CUDA only)",
    )
    p.add_argument(
        "--out",
        help=f"folder that holds the run folders (default: {d.out}; {SYNTHETIC_OUT} with --data "
        "synthetic, so practice runs never mix with real ones)",
    )
    p.add_argument(
        "--name", default=d.name, help="run folder name (default: the loss; with --loss all, NAME-<loss>)"
    )
    p.add_argument(
        "--cache-dir", default=d.cache_dir, help="where decoded frames are cached (default: OUT/.cache)"
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help="write last.pt (~520 MB) every K epochs and after the last; a resume restarts from it",
    )
    p.add_argument(
        "--keep",
        default=d.keep,
        choices=KEEP,
        help="what stays when a run ends: all (best.pt + last.pt, resumable) or best (best.pt only)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run folder from last.pt")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --resume: continue even when settings differ from the saved run",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    return p


def parse_seeds(text: str) -> list[int]:
    """``"47,48,49"`` -> ``[47, 48, 49]``; anything else is a usage error (exit status 2)."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds 0 or above, e.g. 47,48,49; got {text!r}")
    return seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; a ``--preset`` replaces the defaults it names."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset:
        given_normalization = args.normalization  # None unless the flag was typed
        parser.set_defaults(**PRESETS[args.preset])
        args = parser.parse_args(argv)
        if given_normalization is None and (args.init_from or args.encoder_weights):
            args.normalization = None  # implied by the starting weights, as without a preset
    return args


def configs_from_args(args: argparse.Namespace) -> list[TrainConfig]:
    """One TrainConfig per loss to train (four for ``--loss all``)."""
    losses = list(LOSS_NAMES) if args.loss == "all" else [args.loss]
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    given["channels_last"] = not args.no_channels_last
    if given.get("normalization") is None:  # ImageNet weights expect ImageNet-normalised input
        given["normalization"] = "imagenet" if args.encoder_weights else TrainConfig().normalization
        # a fine-tuned model keeps the input scaling it was trained with (a resumed run's own
        # config.json has it, when the run it started from is gone)
        if args.init_from and not (args.resume and not Path(args.init_from).exists()):
            saved = load_checkpoint(init_checkpoint_path(args.init_from), mmap=True)["config"]
            given["normalization"] = TrainConfig.from_dict(saved).normalization
    given["out"] = args.out or (SYNTHETIC_OUT if args.data == "synthetic" else TrainConfig().out)
    configs = []
    for loss in losses:
        name = args.name or loss
        if args.loss == "all" and args.name:
            name = f"{args.name}-{loss}"
        for seed in args.seeds or [args.seed]:  # --seeds: one run per seed, named by it
            named = f"{name}-s{seed}" if args.seeds else name
            config = TrainConfig(**{**given, "loss": loss, "name": named, "seed": seed})
            try:
                config.validate()
            except ValueError as e:
                raise UserError(str(e)) from e
            configs.append(config)
    return configs


def print_warning(message: str) -> None:
    """``warning: message`` on stderr, one line."""
    print(f"warning: {message}", file=sys.stderr)


def plan_run(
    run_dir: Path,
    config: TrainConfig,
    resume: bool,
    force: bool,
    overwrite: bool,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] = print_warning,
) -> tuple[bool, dict[str, Any] | None]:
    """Decide whether ``run_dir`` is resumed (True) or started fresh (False); with a resume, the
    data fingerprint of what last.pt was trained on (config.json's for an old last.pt), else None.

    A folder holding a checkpoint is never clobbered without ``--overwrite``; ``--resume`` with
    settings that differ from the saved ones is refused without ``--force``, and with another
    CPU thread count than the run's (config.json) it warns. A folder without ``last.pt`` (a run
    killed during its first epoch) holds no result: it starts from epoch 1. A finished run
    resumed is said to have nothing left to train (fit then trains no epoch).
    """
    has_result = (run_dir / "last.pt").is_file() or (run_dir / "best.pt").is_file()
    if not resume:
        if has_result and not overwrite:
            raise UserError(
                f"{run_dir} already holds a run: --resume to continue it, --name for a new one, "
                "or --overwrite to replace it"
            )
        return False, None
    if not run_dir.is_dir():
        raise UserError(f"--resume: {run_dir} does not exist: check --out/--name, or drop --resume")
    if not (run_dir / "last.pt").is_file():
        if (run_dir / "best.pt").is_file():
            raise UserError(
                f"--resume: {run_dir} holds best.pt but no last.pt (a run that finished with --keep best): "
                "nothing to resume; --overwrite to train it again"
            )
        say(f"{run_dir} has no last.pt yet (stopped during epoch 1): starting it from epoch 1")
        return False, None
    # the config only: the tensors are mapped, not read (fit loads the checkpoint itself)
    last = load_checkpoint(run_dir / "last.pt", mmap=True)
    saved = TrainConfig.from_dict(last["config"]).to_dict()
    differ = [
        f"{k} {saved[k]!r} -> {v!r}"
        for k, v in config.to_dict().items()
        if k not in RESUME_FREE and saved[k] != v
    ]
    if differ and not force:
        raise UserError(
            f"--resume: {run_dir} was trained with other settings ({'; '.join(differ)}): "
            "use the same flags, or add --force"
        )
    recorded = read_config(run_dir).get("run", {})
    trained = recorded.get("threads")  # absent before --threads existed
    threads = torch.get_num_threads()
    if trained is not None and trained != threads:
        warn(
            f"{run_dir} trained with {cpu_threads(trained)}, this resume has {cpu_threads(threads)}: "
            f"the rest of the run will not match an uninterrupted one (--threads {trained} to match)"
        )
    if last["epoch"] >= config.epochs:
        done = f"already trained {counted(last['epoch'], 'epoch')} (--epochs {config.epochs})"
        say(f"{run_dir} {done}: nothing left to train")
    return True, last.get("data_check") or recorded.get("data_check")


def cpu_threads(n: int) -> str:
    """``"1 CPU thread"``, ``"2 CPU threads"``."""
    return counted(n, "CPU thread")


def check_smallest_batch(config: TrainConfig, frames: int, world: int) -> None:
    """At ``--input-size 32`` the encoder's last feature map is 1x1, and BatchNorm in training
    cannot normalise one value per channel: refuse a run any of whose batches gives a process
    a single frame (the loop's own batches: ``batch_indices`` drops a last batch of one)."""
    if config.input_size // 32 > 1 or not frames:  # no frames: the data check says so, naming the flag
        return
    batches = batch_indices(frames, config.batch_size, torch.Generator(), world)
    if min(len(b) for b in batches) // world < 2:
        per = f" per process ({world})" if world > 1 else ""
        raise UserError(
            f"--input-size 32 with --batch-size {config.batch_size} and {counted(frames, 'training frame')}: "
            f"a batch would hold one frame{per}, and at 32x32 the encoder's last feature map is 1x1, "
            "which BatchNorm cannot normalise alone: use --input-size 64 or batches of at least 2"
        )


RESUME = "; continue with --resume"


def what_is_kept(run_dir: Path, saved: list[str]) -> str:
    """What a run stopped in the middle (Ctrl-C, a diverged loss) leaves, for its last line:
    ``saved`` are its checkpoints there (with ``--checkpoint-every K``, a better epoch's best.pt
    may come before the first last.pt)."""
    if "last.pt" in saved:
        return f"{run_dir / 'last.pt'} holds the last epoch saved"
    if saved:
        return f"{run_dir / 'best.pt'} holds the best epoch so far, with no last.pt to resume from"
    return "no epoch was saved: nothing is kept"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    is_main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    # Ctrl-C in a run says what its folder keeps (train_runs); elsewhere no run was training
    kept = "no run was training (those finished before are complete)"
    return exit_status(lambda: run(args), interrupted=kept, say=is_main)


def run(args: argparse.Namespace) -> int:
    configs = configs_from_args(args)
    first = configs[0]
    out = Path(first.out)
    cache_dir = Path(first.cache_dir) if first.cache_dir else out / ".cache"
    device = pick_device(first.device)  # fail on a bad --device before reading any data
    if first.sync_bn and device.type != "cuda":
        raise UserError("--sync-bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); drop it on CPU")

    train_frames = parse_frames(first.train_frames)
    val_frames = parse_frames(first.val_frames)
    overlap = sorted(set(train_frames) & set(val_frames))
    if overlap and not args.allow_overlap:
        raise UserError(
            f"--train-frames and --val-frames share {len(overlap)} frame(s) "
            f"({describe_frames(overlap)}): separate them or add --allow-overlap"
        )
    test_frames = set(parse_frames(args.test_frames))
    for flag, frames in (("--train-frames", train_frames), ("--val-frames", val_frames)):
        leak = sorted(test_frames & set(frames))
        if leak and not args.allow_overlap:
            raise UserError(
                f"{flag} includes {len(leak)} test frame(s) ({describe_frames(leak)}) of "
                f"--test-frames {args.test_frames}: train.py never trains or selects on test frames; "
                "change the ranges or add --allow-overlap"
            )
    ctx = init_from_env(first.device)  # torchrun: join the process group; else a no-op
    threads = torch.get_num_threads()
    try:
        if first.threads:  # for this call only: ablation.py and the tests call main() in-process
            torch.set_num_threads(first.threads)
        check_batch(ctx, first.batch_size)
        check_smallest_batch(first, len(train_frames), ctx.world)
        return train_runs(args, configs, ctx, device, cache_dir, train_frames, val_frames)
    finally:
        torch.set_num_threads(threads)
        shutdown(ctx)


def check_init_fits(config: TrainConfig, state: dict[str, torch.Tensor], saved: dict[str, Any]) -> None:
    """Raise :class:`UserError` unless the ``--init-from`` weights ``state`` (of a run trained
    with the config dict ``saved``) load into the model ``config`` builds, with the same input
    scaling (which has no weights, so loading alone would not notice it)."""
    source = f"--init-from {config.init_from}"
    trained = TrainConfig.from_dict(saved).normalization
    if config.normalization != trained:
        raise UserError(
            f"{source} was trained with --normalization {trained}: fine-tune it with the same "
            f"(drop --normalization {config.normalization})"
        )
    load_model_state(build_model(config), state, source)


def train_runs(
    args: argparse.Namespace,
    configs: list[TrainConfig],
    ctx: DistContext,
    device: torch.device,
    cache_dir: Path,
    train_frames: list[int],
    val_frames: list[int],
) -> int:
    """Load the frames once, then train each config into its run folder (``device``: the one
    ``--device`` names, before torchrun gives each process its own GPU)."""
    say = print if ctx.is_main else (lambda *a, **k: None)
    first = configs[0]
    run_dirs = [Path(c.out) / c.name for c in configs]
    if first.init_from:  # --overwrite must not delete the weights it is asked to start from
        source = Path(first.init_from).resolve()
        for d in run_dirs:
            if source == d.resolve() or d.resolve() in source.parents:
                raise UserError(
                    f"--init-from {first.init_from} is inside {d}, the run folder this would write: "
                    "give the fine-tuned run another --name"
                )
    warn = print_warning if ctx.is_main else say  # say is a no-op on the other ranks
    for d in run_dirs:  # a file in the way stops the run here, not after the data are read
        check_folder(d, "--out")
    check_folder(cache_dir, "--cache-dir")
    plans = [
        plan_run(d, c, args.resume, args.force, args.overwrite, say, warn) for d, c in zip(run_dirs, configs)
    ]
    resumes = [resume for resume, _ in plans]
    encoder_state = init_state = None
    if first.encoder_weights:  # checked before any data is read or any folder made
        encoder_state, encoder_sha = load_encoder_weights(first.encoder_weights)
    if first.init_from and not all(resumes):  # the same; a resumed run needs only its last.pt
        init_state, init_config, init_sha = load_init_weights(first.init_from)
        # the configs differ only in their loss and name: one model tells whether the weights fit
        check_init_fits(first, init_state, init_config)
    with main_first(ctx):  # rank 0 generates/caches, the others then read its cache
        root = ensure_synthetic(cache_dir) if first.data == "synthetic" else Path(first.data)
        with warnings.catch_warnings():
            warnings.simplefilter("always" if ctx.is_main else "ignore")
            warnings.showwarning = lambda msg, *a, **k: print_warning(str(msg))
            load = functools.partial(load_frames, root, size=first.input_size, cache_dir=cache_dir)
            train = load(train_frames, flag="--train-frames", verbose=ctx.is_main)
            val = load(val_frames, flag="--val-frames", verbose=ctx.is_main) if val_frames else None
    extra = {
        "data_root": str(root),
        # the pixels of the first training frame: evaluate.py checks it is scoring the same data
        "data_check": {"frame": train_frames[0], "sha256": frame_fingerprint(root, train_frames[0])},
        "train_count": len(train_frames),
        "val_count": len(val_frames),
        "torch": torch.__version__,
        **({"encoder_weights_sha256": encoder_sha} if encoder_state is not None else {}),
        **({"init_from_sha256": init_sha} if init_state is not None else {}),
    }
    for run_dir, (_, kept) in zip(run_dirs, plans):  # --data may move (RESUME_FREE), not change
        # kept: what last.pt, the weights resumed, was trained on
        if kept and kept != extra["data_check"] and not args.force:
            raise UserError(
                f"--resume: frame {kept['frame']} of {root} differs from the one {run_dir} trained on: "
                "give the run's own --data, or add --force"
            )
    threads = torch.get_num_threads()  # --threads, else torch's own count
    device = device_for(ctx, device)
    if first.warmup_epochs > first.epochs:
        say(
            f"note: --warmup-epochs {first.warmup_epochs:g} is longer than the run "
            f"({counted(first.epochs, 'epoch')}): the learning rate never reaches --lr {first.lr:g}"
        )
    per_epoch = len(batch_indices(len(train_frames), first.batch_size, torch.Generator(), ctx.world))
    steps = first.epochs * per_epoch
    span = round(1 / (1 - first.ema)) if first.ema else 0  # the steps a weight average mostly holds
    if 2 * span > steps:
        say(
            f"note: the weight average (--ema {first.ema:g}, saved as best.pt) spans about the last {span} "
            f"steps, and this run takes {steps}: it holds weights from early in the run, which score lower "
            "than the last ones; --ema 0 keeps the last weights"
        )
    for run_dir, config, resume in zip(run_dirs, configs, resumes):
        # the device and precision: `--amp auto` decides by the CPU, and the arithmetic differs
        precision = precision_name(amp_dtype(device, config.amp))
        say(
            f"== {config.loss}: {run_dir} ({len(train_frames)} train, {len(val_frames)} val frames, "
            f"{counted(config.epochs, 'epoch')}, {device} {precision}, {cpu_threads(threads)}"
            + (f", {ctx.world} processes)" if ctx.enabled else ")")
        )
        if ctx.is_main:
            if not resume and run_dir.exists():
                shutil.rmtree(run_dir)  # --overwrite, or the remains of a run killed in epoch 1
            make_folder(run_dir, "--out")
        barrier(ctx)
        start = time.perf_counter()
        try:
            best = fit(
                config, run_dir, train, val, resume=resume, extra=extra, ctx=ctx,
                encoder_state=encoder_state, init_state=init_state,
            )  # fmt: skip
        except BaseException as e:
            # a run that failed before its first checkpoint leaves nothing behind
            saved = [f for f in ("last.pt", "best.pt") if (run_dir / f).exists()]
            if ctx.is_main and not resume and not saved:
                shutil.rmtree(run_dir, ignore_errors=True)
            if isinstance(e, Diverged):
                raise Diverged(f"{e} ({what_is_kept(run_dir, saved)})") from e
            if isinstance(e, KeyboardInterrupt):  # its line (exit_status) says what the folder holds
                resume_it = RESUME if "last.pt" in saved else ""
                raise KeyboardInterrupt(f"{what_is_kept(run_dir, saved)}{resume_it}") from e
            raise
        took = time.perf_counter() - start
        summary = f"best epoch {best['epoch']}"
        if val is not None:
            summary += f": val dice {best['val_dice']:.4f} iou {best['val_iou']:.4f}"
        say(f"== {config.loss} done in {took:.0f} s, {summary} -> {run_dir / 'best.pt'}")
    if args.seeds and len(args.seeds) > 1:  # the point of several seeds: one averaged model
        say(f"several seeds as one model: python evaluate.py --ensemble {' '.join(map(str, run_dirs))}")
    return 0


if __name__ == "__main__":
    exit_with(main())
