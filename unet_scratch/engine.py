"""The training loop: a step, an epoch, validation, and ``fit``, which strings them together.

Plain PyTorch, meant to be read top to bottom. The data already sits on the training device
as uint8 tensors (see data.py); each step indexes a batch there, converts it to float, augments
it (augment.py) and runs the model under autocast; the loss is computed in float32 from the
logits (losses.py). Nothing in an epoch waits for the host except the optional progress bar.
What a run leaves on disk (config.json, checkpoints, metrics.csv, resume) is runfolder.py's
business, and torchrun's process plumbing is distributed.py's: ``fit`` only calls them.

Reproducibility: the batch order, the augmentations and any dropout of epoch ``e`` come from
random streams seeded with ``(seed, e)``, and the model's initial weights from ``seed`` alone.
So every loss of a study starts from the same weights and sees the same batches, and
``--resume`` after epoch ``k`` replays epochs ``k+1..`` exactly as an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .augment import augment
from .config import TrainConfig
from .distributed import DistContext, broadcast_buffers, device_for, gather_objects, mean_across, wrap_model
from .errors import UserError
from .losses import DeepSupervisionLoss, build_loss
from .metrics import SegmentationMeter
from .model import UNetResNet50
from .progress import Progress
from .runfolder import RunFolder

SINGLE = DistContext()  # a plain, single-process run

# ----------------------------------------------------------------------------- device, AMP


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"--device {name}: not a device name (use auto, cpu, cuda, cuda:1, mps)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: this machine has no CUDA device; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    return device


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def amp_dtype(device: torch.device, mode: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``--amp mode`` on ``device`` (None: full fp32).

    ``auto``: CUDA -> bf16 where supported, else fp16; CPU -> bf16 when the CPU has native
    bf16, else fp32 (emulated bf16 is slower than fp32); MPS -> fp16.
    """
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        if device.type == "cpu":
            raise UserError("--amp fp16 is not supported on the CPU: use --amp bf16 or off")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    """How a run computes, for its first line: ``"fp32"``, ``"bf16 autocast"``, ``"fp16 autocast"``."""
    if dtype is None:
        return "fp32"
    return f"{'bf16' if dtype == torch.bfloat16 else 'fp16'} autocast"


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The one AMP context of the loop (a no-op when ``dtype`` is None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ----------------------------------------------------------------------------- model, loss, optimiser


def build_model(config: TrainConfig) -> UNetResNet50:
    """A freshly initialised model: the same ``config.seed`` gives the same weights."""
    torch.manual_seed(config.seed)
    return UNetResNet50(
        in_channels=3,
        num_classes=1,
        zero_init_residual=config.zero_init_residual,
        normalization=config.normalization,
        skips=config.skips == "all",
        drop_path=config.drop_path,
        head_dropout=config.head_dropout,
        deep_supervision=config.deep_supervision,
        head_prior=config.head_prior,
    )


def loss_for(config: TrainConfig) -> nn.Module:
    """The training loss of ``config`` with the settings that apply to it."""
    loss = build_loss(
        config.loss,
        config.smooth,
        config.loss_reduction,
        config.loss_focal_alpha,
        config.focal_gamma,
        config.jaccard_log,
        config.jaccard_lovasz,
        config.focal_normalize,
    )
    return DeepSupervisionLoss(loss) if config.deep_supervision else loss


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD; the fused multi-tensor kernel where the device supports it."""
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    # fused=True updates all parameters in one kernel instead of a loop of small ops
    fused = device.type in ("cuda", "cpu")
    betas = (0.9, config.adam_beta2)
    return cls(params, lr=config.lr, betas=betas, weight_decay=config.weight_decay, fused=fused)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at global step ``step`` (0-based).

    ``constant``: 1 after an optional linear warm-up. ``cosine``: linear warm-up over
    ``warmup_steps``, then half a cosine down to 0 at ``total_steps`` (Loshchilov & Hutter,
    "SGDR", ICLR 2017, without restarts).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Diverged(UserError):
    """The loss became NaN or infinite (train.py adds what the run folder still holds)."""


class ModelEMA:
    """An exponential moving average of a model's weights (Polyak averaging), the average of the
    weights after each step so far, step k's weighted ``(1 - d) * d**(n - k)`` and the weights
    renormalised to sum to 1; buffers (BatchNorm statistics) are copied.

    Renormalised (Adam's bias correction) rather than started from the initial weights: the
    plain ``ema = d * ema + (1 - d) * w`` from ``ema = w0`` keeps ``d**n`` of the random initial
    weights, 58 % after one epoch of 54 steps at d = 0.99, so a short run's average scored 0 while
    its trained weights did not. After the 820-1080 steps of a 20-epoch run that share was
    under 3e-4, so long runs get the same average. The number of updates is part of the state
    (``updates``; saved in last.pt).

    The average is what validation sees and what ``best.pt`` stores when ``--ema`` is on.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.source, self.decay, self.updates = model, decay, 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d, n = self.decay, self.updates
        # A_n = S_n / (1 - d^n) with S_n = d S_(n-1) + (1 - d) w_n, S_0 = 0, rewritten as a step
        # from A_(n-1): A_n = keep * A_(n-1) + (1 - keep) * w_n; keep = 0 at n = 1 (a copy of w_1)
        keep = d * (1 - d ** (n - 1)) / (1 - d**n)
        ema_p = list(self.module.parameters())
        torch._foreach_lerp_(ema_p, list(self.source.parameters()), 1 - keep)
        for e, b in zip(self.module.buffers(), self.source.buffers()):
            e.copy_(b)


# ----------------------------------------------------------------------------- a step, an epoch


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The random stream of one epoch (batch order, augmentations), a function of (seed, epoch)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 100_003 + epoch)
    return g


def batch_indices(n: int, batch_size: int, generator: torch.Generator, world: int = 1) -> list[torch.Tensor]:
    """A shuffled split of ``range(n)`` into batches. A last batch of one sample is dropped
    (BatchNorm cannot normalise a single sample at the deepest, 1x1-ish resolutions), and under
    ``world`` processes one too small to give every process a sample."""
    order = torch.randperm(n, generator=generator, device=generator.device)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < max(2, world):
        batches.pop()
    return batches


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    amp: torch.dtype | None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float = 0.0,
) -> torch.Tensor:
    """One optimisation step on ``x (B, 3, S, S)`` float, ``y (B, 1, S, S)``; returns the
    detached loss (a device tensor: reading it would be a host sync)."""
    with autocast(x.device, amp):
        out = model(x)  # logits (B, 1, S, S) in bf16/fp16 under autocast (+ aux logits, deep supervision)
    loss = loss_fn(out, y)  # computed in float32 from the logits
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:  # fp16: scale the loss so small gradients do not underflow
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)  # skipped when a gradient overflowed
        scaler.update()
    else:
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return loss.detach()


@dataclass
class EpochResult:
    loss: float  # mean training loss over the epoch's steps
    steps: int
    images: int
    seconds: float


def train_one_epoch(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    epoch: int,
    amp: torch.dtype | None,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool | None = None,
    ctx: DistContext = SINGLE,
    ema: ModelEMA | None = None,
) -> EpochResult:
    """One pass over ``images (N, 3, S, S) uint8`` / ``masks (N, 1, S, S) uint8``.

    Under torchrun every rank draws the same global batches and augmentations, then trains on
    its slice of each (see distributed.py). Raises :class:`UserError` naming the epoch and step
    when the loss stops being finite.
    """
    device = images.device
    model.train()
    generator = epoch_generator(config.seed, epoch, device)  # batch order and augmentations
    torch.manual_seed(config.seed * 100_003 + epoch + 50_000)  # dropout, stochastic depth
    batches = batch_indices(len(images), config.batch_size, generator, ctx.world)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    step_losses = torch.zeros(len(batches), device=device)  # kept on the device: no sync per step
    bar = Progress(len(batches), f"epoch {epoch}", progress)
    start, seen = time.perf_counter(), 0
    total = config.epochs * len(batches)
    warmup = round(config.warmup_epochs * len(batches))
    for step, idx in enumerate(batches):
        if config.schedule != "constant" or warmup:  # the lr is a function of the global step
            factor = lr_factor((epoch - 1) * len(batches) + step, total, warmup, config.schedule)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * factor
        x = images[idx].float().div_(255)  # (B, 3, S, S) in [0, 1], as ToTensor gives
        y = masks[idx].float()  # (B, 1, S, S) in {0, 1}
        x, y = augment(x, y, config.augment, generator)
        if ctx.enabled:  # this rank's slice of the global batch
            x, y = x.tensor_split(ctx.world)[ctx.rank], y.tensor_split(ctx.world)[ctx.rank]
        x = x.contiguous(memory_format=memory_format)
        step_losses[step] = train_step(model, x, y, loss_fn, optimizer, amp, scaler, config.grad_clip)
        if ema is not None:
            ema.update()
        seen += len(idx)
        bar.update(step + 1, seen)
    bar.close()
    losses = mean_across(ctx, step_losses).cpu()  # the epoch's one host sync
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        raise Diverged(
            f"the loss became {losses[bad[0, 0]].item()} at epoch {epoch}, step {bad[0, 0].item() + 1}: "
            "training diverged; lower --lr"
        )
    return EpochResult(losses.mean().item(), len(batches), seen, time.perf_counter() - start)


# ----------------------------------------------------------------------------- prediction, validation


# the four flip variants of a batch (B, C, H, W), as the dims to flip: none, left-right, up-down, both
FLIPS = ((), (-1,), (-2,), (-1, -2))


@torch.inference_mode()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    amp: torch.dtype | None,
    batch_size: int = 32,
    channels_last: bool = True,
    tta: bool = False,
) -> torch.Tensor:
    """Probabilities ``(N, 1, S, S)`` float32 for ``images (N, 3, S, S) uint8``.

    ``tta=True`` averages the probabilities of the four flip variants (none, left-right,
    up-down, both), each flipped back before averaging.
    """
    model.eval()
    weight = next(model.parameters(), None)  # an ONNX Runtime model (inference.py) has none
    device = weight.device if weight is not None else torch.device("cpu")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    flips = FLIPS if tta else ((),)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).float().div_(255)
        prob = 0
        for dims in flips:
            xf = (x.flip(dims) if dims else x).contiguous(memory_format=memory_format)
            with autocast(device, amp):
                logits = model(xf)
            p = torch.sigmoid(logits.float())
            prob = prob + (p.flip(dims) if dims else p)
        out.append(prob / len(flips))
    return torch.cat(out)


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    amp: torch.dtype | None,
    channels_last: bool = True,
    ctx: DistContext = SINGLE,
) -> dict[str, float]:
    """Mean per-image Dice/IoU at 0.5, the soft variants and pooled scores on a split.

    Under torchrun each rank scores every ``world``-th image and the scores are gathered, so
    every rank returns the same numbers.
    """
    images, masks = images[ctx.rank :: ctx.world], masks[ctx.rank :: ctx.world]
    meter = SegmentationMeter()
    if len(images):
        meter.update(predict(model, images, amp, channels_last=channels_last), masks)
    for other in gather_objects(ctx, meter)[1:] if ctx.enabled else []:
        meter.merge(other)
    return meter.summary()


# ----------------------------------------------------------------------------- fit


def fit(
    config: TrainConfig,
    run_dir: Path,
    train_data: tuple[torch.Tensor, torch.Tensor],
    val_data: tuple[torch.Tensor, torch.Tensor] | None,
    resume: bool = False,
    extra: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    ctx: DistContext = SINGLE,
    encoder_state: dict[str, torch.Tensor] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Train one run into ``run_dir`` (see runfolder.py for what is written); returns the best
    epoch's record ``{"epoch", "val_iou", "val_dice"}``. ``encoder_state`` (a new run only)
    replaces the encoder's random initial weights, e.g. torchvision's ImageNet ResNet50;
    ``init_state`` (a new run only) replaces every weight, e.g. a trained run's (fine-tuning).

    Epoch by epoch: train (:func:`train_one_epoch`), validate the weight average when there is
    validation data (:func:`evaluate`), then let the run folder record the epoch.
    """
    device = device_for(ctx, pick_device(config.device))
    amp = amp_dtype(device, config.amp)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None  # fp16 needs it
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

    model = build_model(config)
    if encoder_state is not None and not resume:
        model.encoder.load_state_dict(encoder_state)
    if init_state is not None and not resume:
        model.load_state_dict(init_state)
    model = model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(model, config, device)
    loss_fn = loss_for(config)
    ema = ModelEMA(model, config.ema) if config.ema else None
    eval_model = ema.module if ema is not None else model  # validated, and saved as best.pt

    run = RunFolder(run_dir, config, ctx, log if ctx.is_main else (lambda _: None))
    facts = {
        "device": str(device), "amp": str(amp).replace("torch.", ""), "processes": ctx.world,
        # on some CPUs one thread and two round differently: a rerun needs the same count
        "threads": torch.get_num_threads(),
        **(extra or {}),
    }  # fmt: skip
    if resume:
        start_epoch = run.resume(model, optimizer, scaler, ema, facts)
    else:
        start_epoch = run.start(model, facts)
    net = wrap_model(ctx, model, config.sync_bn, device)  # DistributedDataParallel under torchrun
    if config.compile:  # the first steps then spend a minute or more compiling
        net = torch.compile(net)

    images, masks = (t.to(device) for t in train_data)
    val = tuple(t.to(device) for t in val_data) if val_data is not None else None
    for epoch in range(start_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        result = train_one_epoch(
            net, images, masks, loss_fn, optimizer, config, epoch, amp, scaler,
            progress if ctx.is_main else False, ctx, ema,
        )  # fmt: skip
        broadcast_buffers(ctx, eval_model)  # every rank validates with rank 0's BatchNorm statistics
        scores = evaluate(eval_model, *val, amp, config.channels_last, ctx) if val is not None else {}
        run.end_epoch(epoch, result, scores, time.perf_counter() - t0, model, optimizer, scaler, ema)
    run.finish()
    return run.best
