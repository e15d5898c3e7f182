"""TrainConfig: every setting of a training run in one dataclass, saved with each run.

The defaults are the recipe chosen on validation folds cut between video sequences
(docs/RESULTS.md): AdamW 1e-3 with a warm-up and cosine decay, flips, 90-degree rotations, small
affine warps and colour jitter, an average of the weights (EMA), per-image Dice/Jaccard, trained
on all of frames 1-428 and keeping the last epoch. ``--preset reference`` is the report this
project replaces (Adam 1e-4 constant, flips, best validation epoch). 128x128, batch 8 and seed 47
are shared by both. ``config.json`` in a run folder is ``asdict(config)``; checkpoints carry it too, so a
run can be rebuilt and resumed from its folder alone.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass
from typing import Any

from .augment import parse_augment
from .losses import FOCAL_NORMALIZE
from .model import NORMALIZATIONS

LOSS_NAMES = ("dice", "jaccard", "focal", "combined")
OPTIMIZERS = ("adam", "adamw", "sgd")
AMP_MODES = ("auto", "off", "bf16", "fp16")
SCHEDULES = ("constant", "cosine")
SKIPS = ("all", "none")
KEEP = ("all", "best")

# --preset reference: the recipe of the report this project replaces, spelled out so that it
# stays the same whatever the defaults become: Adam 1e-4, flips, focal alpha 0.2, and the best
# epoch on frames 364-428 after training on 1-363
PRESETS: dict[str, dict[str, Any]] = {
    "reference": {
        "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "adam_beta2": 0.999, "schedule": "constant",
        "warmup_epochs": 0.0, "augment": "flips", "grad_clip": 0.0, "ema": 0.0,
        "zero_init_residual": False, "normalization": "none", "loss_reduction": "batch", "smooth": 1.0,
        "skips": "all", "drop_path": 0.0, "head_dropout": 0.0, "deep_supervision": False,
        "head_prior": 0.0, "jaccard_log": False, "jaccard_lovasz": False, "focal_normalize": "pixels",
        "focal_alpha": 0.2, "combined_focal_alpha": 0.2, "focal_gamma": 2.0,
        "epochs": 20, "batch_size": 8, "input_size": 128,
        "train_frames": "1-363", "val_frames": "364-428",
    },
}  # fmt: skip


def usable_cpus() -> int:
    """The CPUs this process may run on: under ``taskset`` or a container's CPU set that is
    fewer than the machine has (``os.cpu_count()``), and more threads would only contend."""
    if hasattr(os, "sched_getaffinity"):  # Linux; not on macOS or Windows
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class TrainConfig:
    """Hyper-parameters and paths of one training run (see ``train.py --help``)."""

    loss: str = "dice"
    data: str = "data/CVC-ClinicDB"
    train_frames: str = "1-428"  # the assignment's training frames
    val_frames: str = "none"  # e.g. 364-428 (then train on 1-363) to watch or tune a recipe
    epochs: int = 20
    batch_size: int = 8
    input_size: int = 128
    seed: int = 47
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # Adam's decay of its squared-gradient average: it remembers about 1 / (1 - beta2) steps
    adam_beta2: float = 0.999
    schedule: str = "cosine"  # linear warm-up, then cosine decay to 0; or "constant"
    warmup_epochs: float = 1.0
    augment: str = "flips,rot90,affine,color"  # comma list of augment.AUGMENTATIONS, or "none"
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    ema: float = 0.99  # decay of an exponential moving average of the weights; 0 = off
    zero_init_residual: bool = False
    encoder_weights: str = ""  # a torchvision ResNet50 .pth to start the encoder from ("" = random)
    init_from: str = ""  # a trained run (folder or .pt) to start every weight from: fine-tuning
    normalization: str = "none"  # input scaling inside the model: none, imagenet or image
    skips: str = "all"  # "none": the decoder without its skip connections (an ablation)
    drop_path: float = 0.0  # stochastic depth of the deepest encoder block (linear in depth)
    head_dropout: float = 0.0  # channel dropout before the head
    deep_supervision: bool = False  # auxiliary heads on decoder blocks 1-3, training only
    head_prior: float = 0.0  # start the head at this probability everywhere (0: kaiming head)
    smooth: float = 1.0
    loss_reduction: str = "image"  # Dice/Jaccard ratio per image, then the mean; or "batch"
    focal_alpha: float | None = 0.75  # focal loss: weight of polyp pixels (reference: 0.2)
    combined_focal_alpha: float | None = 0.2  # the same for the focal third of the combined loss
    focal_gamma: float = 2.0
    jaccard_log: bool = False  # the Jaccard loss as -log(IoU) instead of 1 - IoU
    jaccard_lovasz: bool = False  # the Jaccard loss as the Lovász hinge on the logits
    focal_normalize: str = "pixels"  # focal loss: mean over pixels, or per image over its polyp pixels
    device: str = "auto"
    threads: int = 0  # CPU threads for torch; 0 = torch's own (OMP_NUM_THREADS, else one per core)
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile the training model (same maths, fused kernels)
    sync_bn: bool = False
    out: str = "runs"
    name: str = ""
    cache_dir: str = ""
    checkpoint_every: int = 1  # write last.pt every K epochs (and after the last)
    keep: str = "all"  # at the end keep "all" (best.pt + last.pt) or "best" (drop last.pt)

    def validate(self) -> None:
        """Raise ValueError naming the flag when a setting is out of range."""
        checks = [
            (self.loss in LOSS_NAMES, f"--loss must be one of {', '.join(LOSS_NAMES)}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}"),
            (self.loss_reduction in ("batch", "image"), "--loss-reduction must be batch or image"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (
                self.input_size >= 32 and self.input_size % 32 == 0,
                f"--input-size must be a positive multiple of 32 (e.g. 128), got {self.input_size}",
            ),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (
                0 <= self.threads <= usable_cpus(),
                f"--threads must be from 0 (torch's own count) to the {usable_cpus()} CPUs this "
                f"process may use, got {self.threads}",
            ),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.adam_beta2 < 1, f"--adam-beta2 must be in [0, 1), got {self.adam_beta2}"),
            (
                self.optimizer != "sgd" or self.adam_beta2 == TrainConfig.adam_beta2,
                "--adam-beta2 applies to --optimizer adam and adamw, not sgd",
            ),
            (self.smooth >= 0, f"--smooth must be >= 0, got {self.smooth}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {self.warmup_epochs}"),
            (self.grad_clip >= 0, f"--grad-clip must be >= 0, got {self.grad_clip}"),
            (0 <= self.ema < 1, f"--ema must be in [0, 1), got {self.ema}"),
            (
                self.focal_alpha is None or 0 <= self.focal_alpha <= 1,
                f"--focal-alpha must be in [0, 1], got {self.focal_alpha}",
            ),
            (
                self.combined_focal_alpha is None or 0 <= self.combined_focal_alpha <= 1,
                f"--combined-focal-alpha must be in [0, 1], got {self.combined_focal_alpha}",
            ),
            (
                self.normalization in NORMALIZATIONS,
                f"--normalization must be one of {', '.join(NORMALIZATIONS)}",
            ),
            (
                self.focal_normalize in FOCAL_NORMALIZE,
                f"--focal-normalize must be one of {', '.join(FOCAL_NORMALIZE)}",
            ),
            (
                not (self.jaccard_log and self.jaccard_lovasz),
                "--jaccard-log and --jaccard-lovasz are two forms of the Jaccard loss: give one",
            ),
            (
                not (self.init_from and self.encoder_weights),
                "--init-from and --encoder-weights both give the starting weights: give one",
            ),
            (self.skips in SKIPS, f"--skips must be one of {', '.join(SKIPS)}"),
            (0 <= self.drop_path < 1, f"--drop-path must be in [0, 1), got {self.drop_path}"),
            (0 <= self.head_dropout < 1, f"--head-dropout must be in [0, 1), got {self.head_dropout}"),
            (0 <= self.head_prior < 1, f"--head-prior must be in [0, 1), got {self.head_prior}"),
            (
                self.checkpoint_every >= 1,
                f"--checkpoint-every must be at least 1, got {self.checkpoint_every}",
            ),
            (self.keep in KEEP, f"--keep must be one of {', '.join(KEEP)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        parse_augment(self.augment)  # raises on an unknown name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a saved dict, ignoring keys this version does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        before = {**SAVED_BEFORE, "combined_focal_alpha": d.get("focal_alpha", 0.2)}
        return cls(**{**before, **{k: v for k, v in d.items() if k in names}})

    @property
    def loss_focal_alpha(self) -> float | None:
        """The α of the focal term in ``self.loss``: ``combined_focal_alpha`` inside combined."""
        return self.combined_focal_alpha if self.loss == "combined" else self.focal_alpha


# Settings that change what a saved run computes, with the value that configs saved before the
# setting existed meant (a default changing later must not change an old run); before
# combined_focal_alpha existed, the combined loss used focal_alpha (see from_dict).
SAVED_BEFORE: dict[str, Any] = {
    "normalization": "none",
    "skips": "all",
    "drop_path": 0.0,
    "head_dropout": 0.0,
    "deep_supervision": False,
    "jaccard_log": False,
    "jaccard_lovasz": False,
    "focal_normalize": "pixels",
}

# --preset tuned: the defaults' recipe by name (what benchmarks/ablation.py calls "tuned")
PRESETS["tuned"] = {k: getattr(TrainConfig(), k) for k in PRESETS["reference"] if "frames" not in k}
