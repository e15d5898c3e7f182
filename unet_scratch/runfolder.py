"""What a training run leaves on disk, and how it is resumed: the bookkeeping around the loop.

A run folder ``runs/<name>/`` holds:

- ``config.json``: every setting (``TrainConfig``) plus facts about the run under ``"run"``
  (the initial weights' fingerprint, device, precision, CPU thread count, data, frame counts);
- ``metrics.csv``: one row per epoch (rewritten from the history kept in ``last.pt``);
- ``best.pt``: the model to use: the epoch with the best validation IoU, or the last epoch
  when there is no validation split (the weight average when ``--ema`` is on); with it the
  config and the fingerprint of the first training frame, so that a ``best.pt`` copied out of
  its folder still tells evaluate.py which data it was trained on;
- ``last.pt``: what ``--resume`` needs: the trained weights, their average, the optimiser and
  gradient-scaler state and the history.

Checkpoints are plain state_dicts plus the config, written atomically (checkpoint.py). Under
torchrun only rank 0 writes or prints. ``--checkpoint-every K`` writes ``last.pt`` (and, without
validation, ``best.pt``) every K epochs and after the last one; ``--keep best`` skips the
final ``last.pt`` and deletes an earlier one once the run has finished. A model with the
optimiser state and the average is four copies of 32.5 M float32 weights: ``last.pt`` is
~520 MB, ``best.pt`` ~130 MB.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CHECKPOINT_FORMAT, atomic_torch_save, load_checkpoint, load_model_state
from .config import TrainConfig
from .distributed import DistContext
from .errors import UserError
from .files import atomic_write_bytes, atomic_write_json
from .progress import format_duration
from .report import read_config

# what a run folder consists of (above): an output of evaluate.py or export must not replace them
RUN_FILES = ("config.json", "metrics.csv", "best.pt", "last.pt")


def is_run(folder: Path) -> bool:
    """A folder train.py wrote a run into (config.json, best.pt or last.pt in it)."""
    return folder.is_dir() and any((folder / f).exists() for f in ("config.json", "best.pt", "last.pt"))


def run_files(runs: Sequence[str | Path]) -> list[Path]:
    """The files of the runs ``runs`` (those that exist or may), for :func:`files.check_file`:
    a run folder's, or for a checkpoint file, the file and the run files beside it."""
    files = []
    for run in map(Path, runs):
        if run.is_file():  # a checkpoint given itself: it, and the files of the run it is in
            files.append(run)
            if not (run.parent / "config.json").is_file():  # what train.py writes first in a run
                continue
            run = run.parent
        files += [run / name for name in RUN_FILES]
    return files


CSV_FIELDS = [
    "epoch",
    "train_loss",
    "val_dice",
    "val_iou",
    "val_soft_dice",
    "val_pooled_dice",
    "lr",
    "images_per_s",
    "epoch_seconds",
    "elapsed_seconds",
]


def state_sha256(model: nn.Module) -> str:
    """A fingerprint of the model's weights (to check that runs start from the same ones)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def write_csv(history: list[dict[str, Any]], path: Path) -> None:
    """Rewrite ``metrics.csv`` from the history kept in the checkpoint (atomic)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(text.getvalue().encode(), path)


class RunFolder:
    """The files of one run (see the module docstring), the history and the best epoch so far."""

    def __init__(
        self, path: Path, config: TrainConfig, ctx: DistContext, log: Callable[[str], None] = print
    ) -> None:
        self.path, self.config, self.ctx, self.log = Path(path), config, ctx, log
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": 0, "val_iou": -1.0}
        self.init_sha = ""
        self.data_check: dict[str, Any] | None = None  # {"frame", "sha256"} of the training data
        self.elapsed = 0.0  # training seconds over every session of the run
        self.session_start = time.perf_counter()
        self.first_epoch = 1  # of this session (for the ETA)
        # a resumed session's facts, for config.json once the session has saved a checkpoint
        self.session_facts: tuple[dict[str, Any], dict[str, Any]] | None = None

    def _clean_stale(self) -> None:
        if self.ctx.is_main:
            for stale in self.path.glob(".*.tmp"):  # temp files of a write killed half-way
                stale.unlink()

    def start(self, model: nn.Module, facts: dict[str, Any]) -> int:
        """A new run: write ``config.json`` with ``facts`` and the initial weights' fingerprint;
        returns the first epoch, 1."""
        self._clean_stale()
        self.init_sha = state_sha256(model)
        self.data_check = facts.get("data_check")
        self._write_config(facts)
        return 1

    def _write_config(self, facts: dict[str, Any], earlier: dict[str, Any] | None = None) -> None:
        """``config.json``: the settings this session trains with and its ``facts`` (over the
        ``earlier`` sessions' facts of a resumed run)."""
        if self.ctx.is_main:
            run = {**(earlier or {}), "init_sha256": self.init_sha, **facts}
            atomic_write_json({**self.config.to_dict(), "run": run}, self.path / "config.json")

    def resume(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        ema: Any | None,
        facts: dict[str, Any] | None = None,
    ) -> int:
        """Load ``last.pt`` into the model, optimiser, scaler and weight average; returns the
        epoch to continue from. Once this session has saved a checkpoint, ``config.json`` is
        rewritten with its settings (those ``--resume --force`` changed) and its ``facts``
        (device, threads, data), which then describe the weights saved; until then (a session
        stopped in its first epoch, a finished run resumed) it stays as it was. The initial
        weights' fingerprint stays."""
        self._clean_stale()
        path = self.path / "last.pt"
        ckpt = load_checkpoint(path)
        load_model_state(model, ckpt["model"], path)
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (KeyError, ValueError) as e:
            raise UserError(
                f"{path}: its optimiser state does not fit --optimizer {self.config.optimizer} ({e}); "
                "resume with the run's own settings"
            ) from e
        # load_state_dict puts back the saved weight decay and betas; a resume with --force trains
        # with the settings given, as the config records them (the lr is set at every step anyway)
        for group in optimizer.param_groups:
            group["weight_decay"] = self.config.weight_decay
            if "betas" in group:
                group["betas"] = (group["betas"][0], self.config.adam_beta2)
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            load_model_state(ema.module, ckpt["ema"], path)
            # a last.pt from before the count was saved kept the plain average: a count so large
            # that the correction is nil goes on with it as it was
            ema.updates = ckpt.get("ema_updates", 10**9)
        self.history, self.best = ckpt["history"], ckpt["best"]
        facts, earlier = facts or {}, read_config(self.path).get("run", {})
        self.init_sha = ckpt.get("init_sha256") or earlier.get("init_sha256", "")
        # the data this session trains on (other data only with --force; evaluate.py checks the
        # latest), else the checkpoint's, else config.json's (a last.pt from before checkpoints held it)
        self.data_check = facts.get("data_check") or ckpt.get("data_check") or earlier.get("data_check")
        self.session_facts = (facts, earlier)
        self.elapsed = self.history[-1]["elapsed_seconds"] if self.history else 0.0
        self.first_epoch = ckpt["epoch"] + 1
        self.log(f"resuming {self.path} after epoch {ckpt['epoch']}")
        return self.first_epoch

    def end_epoch(
        self,
        epoch: int,
        result: Any,
        scores: dict[str, float],
        seconds: float,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        ema: Any | None,
    ) -> dict[str, Any]:
        """Record epoch ``epoch``: its metrics row, the best epoch, the checkpoints due, the
        progress line. ``result`` is the epoch's ``EpochResult``, ``scores`` the validation
        scores (empty without validation), ``seconds`` the epoch's wall time."""
        config, validated = self.config, bool(scores)
        self.elapsed += seconds
        row = {
            "epoch": epoch,
            "train_loss": round(result.loss, 6),
            "val_dice": round(scores.get("dice", math.nan), 6),
            "val_iou": round(scores.get("iou", math.nan), 6),
            "val_soft_dice": round(scores.get("soft_dice", math.nan), 6),
            "val_pooled_dice": round(scores.get("pooled_dice", math.nan), 6),
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": round(result.images / result.seconds, 2),
            "epoch_seconds": round(seconds, 3),
            "elapsed_seconds": round(self.elapsed, 3),
        }
        self.history.append(row)
        improved = not validated or scores["iou"] > self.best["val_iou"]  # no validation: the last
        if improved:
            self.best = {
                "epoch": epoch,
                "val_iou": scores.get("iou", math.nan),
                "val_dice": scores.get("dice", math.nan),
            }
        due = epoch % config.checkpoint_every == 0 or epoch == config.epochs
        if self.ctx.is_main:
            eval_model = ema.module if ema is not None else model
            state = {
                "format": CHECKPOINT_FORMAT,
                "model": eval_model.state_dict(),
                "config": config.to_dict(),
                "epoch": epoch,
                "metrics": row,
                "best": self.best,
                "history": self.history,
                "init_sha256": self.init_sha,
                **({"data_check": self.data_check} if self.data_check else {}),
            }
            # best.pt first: if we die between the two writes, last.pt still says "redo this epoch".
            # With validation a better epoch cannot be recovered later, so it is written at once.
            saved = improved and (validated or due)
            if saved:
                atomic_torch_save(state, self.path / "best.pt")
            if due and not (epoch == config.epochs and config.keep == "best"):  # it would be deleted
                state["optimizer"] = optimizer.state_dict()
                if ema is not None:  # last.pt: the trained weights to resume from, and their average
                    state["model"], state["ema"] = model.state_dict(), ema.module.state_dict()
                    state["ema_updates"] = ema.updates
                state["scaler"] = scaler.state_dict() if scaler is not None else {}
                atomic_torch_save(state, self.path / "last.pt")
                saved = True
            if saved and self.session_facts is not None:  # a resumed session's first checkpoint
                self._write_config(*self.session_facts)
                self.session_facts = None
            write_csv(self.history, self.path / "metrics.csv")

        per_epoch = (time.perf_counter() - self.session_start) / (epoch - self.first_epoch + 1)
        eta = per_epoch * (config.epochs - epoch)
        val_text = f"val dice {row['val_dice']:.4f} iou {row['val_iou']:.4f}" if validated else "no val"
        self.log(
            f"epoch {epoch:>2}/{config.epochs}  loss {row['train_loss']:.4f}  {val_text}  "
            f"{row['images_per_s']:.1f} img/s  {format_duration(self.elapsed)} elapsed  "
            f"ETA {format_duration(eta)}" + ("  *" if improved and validated else "")
        )
        return row

    def finish(self) -> None:
        """The run is complete: with ``--keep best``, delete ``last.pt`` (it cannot be resumed)."""
        if self.ctx.is_main and self.config.keep == "best":
            (self.path / "last.pt").unlink(missing_ok=True)
