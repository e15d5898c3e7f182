"""Checkpoints: plain state_dicts plus config, written atomically, loaded with weights_only.

A checkpoint is a dict of tensors and plain Python values only (runfolder.py writes them)::

    best.pt (~130 MB): {"format": 1, "model": state_dict (the weight average when there is one),
        "config": TrainConfig dict, "epoch": int (completed epochs), "metrics": {this epoch's row},
        "best": {"epoch", "val_iou", "val_dice"}, "history": [a row per epoch], "init_sha256": str,
        "data_check": {"frame": int, "sha256": str} (a fingerprint of the first training frame's
        pixels, for evaluate.py's data check; absent from older checkpoints)}
    last.pt (~520 MB): the same, with "model" the trained weights, plus "ema" (the average's
        state_dict) and "ema_updates" (its step count, for its bias correction; absent from older
        checkpoints), "optimizer" (its state_dict) and "scaler" (the fp16 gradient scaler's, or {})

``torch.load(..., weights_only=True)`` can read that and nothing else: a file carrying a pickled
Python object (which could run code when loaded) is refused.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError, listed
from .files import atomic_write

CHECKPOINT_FORMAT = 1


def atomic_torch_save(obj: object, path: str | Path, flag: str = "--out") -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`files.atomic_write`; ``flag``: the
    option that chose the folder)."""
    atomic_write(path, lambda f: torch.save(obj, f), flag)


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`atomic_torch_save` with ``weights_only=True``.

    ``mmap=True`` maps the tensors instead of reading them: cheap when only the config or
    history is wanted from a 520 MB ``last.pt``.

    Raises :class:`UserError` naming the file when it is missing, damaged, holds pickled
    Python objects, or is not a unet-scratch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: check the path or train first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as e:  # no permission, a disk error: the file may be fine
        raise UserError(f"cannot read {path} ({e.strerror or e}): check its permissions or the disk") from e
    except Exception as e:  # noqa: BLE001 - every failure becomes one line naming the file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in str(e):
            raise UserError(
                f"{path} holds Python objects that safe (weights_only) loading refuses, so it "
                "could run code: use a checkpoint written by train.py"
            ) from e
        if not isinstance(e, RuntimeError):  # the unpickler's: KeyError(101) for text, IndexError, ...
            reason = "not data that torch.save wrote"
        raise UserError(f"{path} is damaged or not a checkpoint ({reason}): retrain or restore it") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise UserError(f"{path} is not a unet-scratch checkpoint (no model/config): use one from train.py")
    return ckpt


def model_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights to put to use from a checkpoint: ``best.pt``'s model, or a ``last.pt``'s
    weight average. last.pt holds the live weights under "model" and their average under "ema"
    ({} without one): the average is what the run validated and what its best.pt holds."""
    return ckpt.get("ema") or ckpt["model"]


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``model.load_state_dict(state)``, with a one-line error listing what does not match."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
        if items:
            problems.append(f"{len(items)} {label} ({listed(items)})")
    if problems:
        raise UserError(
            f"{source} does not fit this model: {'; '.join(problems)}: it was saved from another "
            "architecture or configuration"
        )
    model.load_state_dict(state)


def load_encoder_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """A torchvision ResNet50 checkpoint (the ``resnet50-*.pth`` torchvision saves: a plain
    state_dict) as the encoder's state_dict, ``fc.*`` dropped; and the file's sha256.

    Loaded with ``weights_only=True``. Every other key must be one of the encoder's, with its
    shape: missing, unexpected or mis-shaped keys raise :class:`UserError` listing them.
    """
    from .model import ResNet50Encoder  # the model package does not import this module back

    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"--encoder-weights {path} does not exist: give the torchvision resnet50-*.pth file "
            "(https://download.pytorch.org/models/resnet50-0676ba61.pth)"
        )
    data = path.read_bytes()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line naming the file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"--encoder-weights {path} cannot be loaded safely ({reason})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(
            f"--encoder-weights {path} is not a state_dict (a dict of tensors) in torchvision's layout"
        )
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    load_model_state(ResNet50Encoder(), state, f"--encoder-weights {path}")  # checks keys and shapes
    return state, hashlib.sha256(data).hexdigest()


def init_checkpoint_path(path: str | Path) -> Path:
    """The checkpoint ``--init-from`` names: a run folder's ``best.pt``, or the file itself.
    Raises :class:`UserError` when there is none."""
    path = Path(path)
    if path.is_dir():
        if not (path / "best.pt").is_file():
            raise UserError(f"--init-from {path} has no best.pt: give a trained run's folder or a .pt file")
        return path / "best.pt"
    if not path.is_file():
        raise UserError(f"--init-from {path} does not exist: give a trained run's folder or its best.pt")
    return path


def load_init_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """A trained run's weights to fine-tune from (``path`` as :func:`init_checkpoint_path`
    takes it): the model's state_dict (from a ``last.pt``, its weight average), the config it
    was trained with (a dict) and the file's sha256; loaded with ``weights_only=True``.

    Raises :class:`UserError` naming the file when it is missing or not a unet-scratch
    checkpoint (see :func:`load_checkpoint`); whether the weights fit the model being trained
    is for the caller to check (:func:`load_model_state`).
    """
    path = init_checkpoint_path(path)
    ckpt = load_checkpoint(path)
    state = model_weights(ckpt)
    if not isinstance(state, dict) or not isinstance(ckpt["config"], dict):
        raise UserError(f"--init-from {path} is not a unet-scratch checkpoint: use one from train.py")
    return state, ckpt["config"], hashlib.sha256(path.read_bytes()).hexdigest()
