"""From an image of any size to a mask of that size: a trained model put to use.

A model trained by this project sees ``S x S`` frames (``config.input_size``), resized from the
original with Pillow's bicubic filter (data.py). To segment an image of any size it is prepared
the same way, the model's probabilities are resized back to the image's own height and width
(bilinear), and only then thresholded. predict.py, evaluate.py ``--full-res`` and export.py
share what is here: loading a run's model (or several runs as one averaged model), preparing a
frame, resizing probabilities back, and running an exported ONNX model through ONNX Runtime as
if it were the PyTorch one.
"""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import postprocess
from .checkpoint import load_checkpoint, load_model_state, model_weights
from .config import TrainConfig
from .data import MEDIA_EXTENSIONS, resize_image
from .errors import UserError, listed
from .report import first_given
from .runfolder import is_run


def nearest_runs(missing: Path) -> tuple[Path, list[Path]]:
    """The nearest folder above ``missing`` that exists, and the run folders (with a best.pt) in
    it and one level below."""
    base = next((p for p in missing.parents if p.is_dir()), Path("."))
    return base, sorted({f.parent for pattern in ("*/best.pt", "*/*/best.pt") for f in base.glob(pattern)})


def runs_near(missing: Path) -> str:
    """The fix for a run folder that does not exist: the runs in the nearest folder above it that
    does (``runs/dice`` when the quick start's run is ``runs/synthetic/dice``), else train one."""
    base, found = nearest_runs(missing)
    if not found:
        return "train it first (python train.py), or check the path"
    return f"check the path; runs in {base}: {listed([shlex.quote(str(f)) for f in found])}"


def check_run_folder(run_dir: Path) -> None:
    """Raise :class:`UserError` unless ``run_dir`` is a folder: one that does not exist (a symlink
    loop too) names the runs nearby (:func:`runs_near`); a file such as ``runs/dice/best.pt``
    names its run's folder, where the config and history live, when it is in one, and a
    checkpoint on its own how to make it one."""
    if not run_dir.exists():
        raise UserError(f"run folder {run_dir} does not exist: {runs_near(run_dir)}")
    if not run_dir.is_dir() and is_run(run_dir.parent):
        raise UserError(f"{run_dir} is a file: give the run's folder ({run_dir.parent}), not its checkpoint")
    if not run_dir.is_dir() and run_dir.suffix.lower() in (".pt", ".pth"):  # a checkpoint handed on alone
        raise UserError(
            f"{run_dir} is a checkpoint, not a run folder: put it in a folder of its own as best.pt "
            f"(mkdir NAME && cp {shlex.quote(str(run_dir))} NAME/best.pt) and give NAME, "
            "with --data DIR if its data lies elsewhere here"
        )
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file, not a run folder: give a folder train.py wrote (with best.pt)")


def onnx_path(path: str | Path) -> Path:
    """The file an ``--onnx`` names, or a :class:`UserError` with the fix: a folder (a run folder
    goes with ``--run``), a path that does not exist."""
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"{path} is a folder: --onnx takes an exported .onnx file; a run folder goes with --run"
        )
    if not path.is_file():
        raise UserError(f"{path} does not exist: export one with python -m unet_scratch.export")
    return path


def checkpoint_path(run: str | Path) -> Path:
    """The checkpoint a ``--run`` of predict.py or export names: a run folder's ``best.pt``, or
    a checkpoint file itself (``best.pt``, ``last.pt``, or a copy under another name: the config
    is inside it, so a single file can be handed on). Raises :class:`UserError` with the fix for
    a path that does not exist (the runs nearby, :func:`runs_near`), a folder without
    ``best.pt``, and an exported model, which is not a checkpoint."""
    run = Path(run)
    suffix = run.suffix.lower()
    if not run.exists() and is_run(run.parent):  # a misspelt checkpoint: the ones there are
        held = ", ".join(sorted(f.name for f in run.parent.glob("*.pt"))) or "no checkpoint yet"
        raise UserError(f"{run} does not exist: {run.parent} holds {held}")
    if not run.exists():
        what = "checkpoint" if suffix in (".pt", ".pth") else "run folder"
        raise UserError(f"{what} {run} does not exist: {runs_near(run)}")
    if not run.is_dir():
        if suffix == ".onnx":
            raise UserError(f"{run} is an exported ONNX model: give it as --onnx {run} (predict.py)")
        if suffix == ".pt2":
            raise UserError(
                f"{run} is a torch.export program: load it with torch.export.load, or give the run it "
                "was exported from"
            )
        if suffix in MEDIA_EXTENSIONS:  # the arguments in the wrong order
            raise UserError(
                f"{run} is an image or a video, not a model: --run takes a run folder or a checkpoint, "
                "and the inputs to segment come after it"
            )
        if run.name in ("config.json", "metrics.csv"):
            raise UserError(f"{run} is a run's {run.stem}, not its model: give the run folder {run.parent}")
        return run
    path = run / "best.pt"
    if not path.is_file():
        held = sorted(d.name for d in run.iterdir() if (d / "best.pt").is_file())
        if held:  # the folder train.py --out wrote the runs into
            raise UserError(f"{run} has no best.pt but holds runs: give one, e.g. {run / held[0]}")
        if any(f.suffix.lower() in MEDIA_EXTENSIONS for f in run.iterdir()):  # swapped
            raise UserError(
                f"{run} holds images, not a model: --run takes a run folder or a checkpoint, and the "
                "inputs to segment come after it"
            )
        raise UserError(f"{run} has no best.pt: train it first (python train.py), or pick another run")
    return path


def load_run(run: str | Path) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """The model of the checkpoint ``run`` names (:func:`checkpoint_path`: a run folder's
    ``best.pt`` or a checkpoint file; from a ``last.pt``, its weight average, what the run
    validated), rebuilt from the config stored in it, loaded with ``weights_only=True``, in eval
    mode; that config; and the checkpoint (its epoch, history). A pickled or a foreign
    checkpoint raises :class:`UserError` naming the file."""
    from .engine import build_model  # engine imports the training machinery; only needed here

    path = checkpoint_path(run)
    ckpt = load_checkpoint(path)
    config = TrainConfig.from_dict(ckpt["config"])
    model = build_model(config)  # the architecture the run trained, then its weights
    load_model_state(model, model_weights(ckpt), path)
    return model.eval(), config, ckpt


# The temperature evaluate.py and predict.py apply unless told otherwise. The focal loss is not a
# proper scoring rule: at alpha 0.75 and gamma 2 its optimum keeps a pixel that is polyp 95 % of
# the time at p = 0.82, and one that is polyp 5 % of the time at 0.33. sigmoid(T * logit) with T
# fitted by cross-entropy on the validation folds (docs/RESULTS.md, "The focal model's
# probabilities") makes its probabilities calibrated and changes no mask at threshold 0.5.
FOCAL_TEMPERATURE = 3.7


def default_temperature(config: TrainConfig) -> float:
    """``FOCAL_TEMPERATURE`` for a run trained with the focal loss at the alpha and gamma it was
    fitted for (0.75 and 2), 1 for every other run."""
    if config.loss == "focal" and (config.focal_alpha, config.focal_gamma) == (0.75, 2.0):
        return FOCAL_TEMPERATURE
    return 1.0


def temper(prob: torch.Tensor, temperature: float) -> torch.Tensor:
    """``sigmoid(T * logit(prob))``, elementwise: for a model's own probabilities that is
    ``sigmoid(T * logits)``. Applied to the final map (after TTA's average, after resizing back
    to an image's size), so every pixel stays on its side of 0.5 and no mask at threshold 0.5
    changes; T > 1 moves probabilities towards 0 and 1, T < 1 towards 0.5."""
    if temperature == 1:
        return prob
    return torch.sigmoid(temperature * torch.logit(prob.float()))  # logit(0 or 1) = -+inf: kept


class Ensemble(nn.Module):
    """Several trained models as one: the mean of their probabilities.

    ``forward(x)``: ``x (N, 3, S, S)`` float in [0, 1] -> logits ``(N, 1, S, S)`` float32, the
    logit of ``mean_k sigmoid(T_k * z_k)``, where ``z_k`` are member k's logits and ``T_k`` its
    temperature. Returning logits lets every caller (TTA, predict.py, evaluate.py) treat the
    ensemble as one model; their ``sigmoid`` gives back the mean probability.

    Probabilities are averaged, not logits: a member that is sure (z = 12) cannot outvote a
    doubtful one many times over, and each member's own temperature (the focal model's 3.7)
    puts the members on one, calibrated, scale before they are averaged.
    """

    def __init__(self, models: Sequence[nn.Module], temperatures: Sequence[float]) -> None:
        super().__init__()
        if len(models) != len(temperatures) or not models:
            raise ValueError("an ensemble needs one temperature per model, and at least one model")
        self.members = nn.ModuleList(models)
        self.temperatures = [float(t) for t in temperatures]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # under autocast the members run in bf16/fp16; the mean in fp32
        z = torch.stack([t * model(x).float() for model, t in zip(self.members, self.temperatures)])
        with torch.autocast(x.device.type, enabled=False):
            # logit(mean p) = log(sum p) - log(sum (1 - p)), from log-probabilities: finite where
            # sigmoid rounds to exactly 0 or 1 in float32 (|z| past ~17) and logit(mean p) would
            # be -+inf, which an exported graph would hand to its caller's resize
            return torch.logsumexp(F.logsigmoid(z), 0) - torch.logsumexp(F.logsigmoid(-z), 0)


def load_ensemble(run_dirs: Sequence[str | Path]) -> tuple[Ensemble, list[TrainConfig], list[dict[str, Any]]]:
    """The runs' models (:func:`load_run`: a run folder's ``best.pt`` or a checkpoint file) as
    one :class:`Ensemble` in eval mode, their configs and checkpoints. Each member has its own
    default temperature (:func:`default_temperature`) before the mean. The runs must exist,
    share an input size (the frames are prepared once for all of them) and be different
    checkpoints (one given twice, as ``runs/a`` and ``runs/a/best.pt`` too, would weigh double
    in the mean): :class:`UserError` naming the first that is not."""
    # first, or a missing folder given twice would be "given twice"; also a symlink loop, which
    # resolve() cannot follow
    paths = [checkpoint_path(r) for r in run_dirs]
    for i, j in enumerate(first_given(paths)):
        if j != i:
            raise UserError(
                f"{run_dirs[i]} is given twice (also as {run_dirs[j]}): an ensemble's runs are averaged "
                "with equal weights, so give each run once"
            )
    loaded = [load_run(r) for r in run_dirs]
    configs = [config for _, config, _ in loaded]
    for run_dir, config in zip(run_dirs, configs):
        if config.input_size != configs[0].input_size:
            raise UserError(
                f"{run_dir} was trained at {config.input_size}x{config.input_size}, {run_dirs[0]} at "
                f"{configs[0].input_size}x{configs[0].input_size}: an ensemble needs runs of one input size"
            )
    temperatures = [default_temperature(c) for c in configs]
    model = Ensemble([m for m, _, _ in loaded], temperatures)
    return model.eval(), configs, [ckpt for _, _, ckpt in loaded]


def load_runs(
    run_dirs: Sequence[str | Path], temperature: float | None = None
) -> tuple[nn.Module, list[TrainConfig], list[dict[str, Any]], float]:
    """One run's model (:func:`load_run`) or several runs as one (:func:`load_ensemble`), their
    configs and checkpoints, and the temperature for the final probability map: ``temperature``
    when given, else one run's own (:func:`default_temperature`), or 1 for an ensemble, whose
    members have theirs inside, before the mean. Applied to the final map, a temperature moves
    no mask at threshold 0.5, for one run and for an ensemble alike (as on an exported one)."""
    if len(run_dirs) == 1:
        model, config, ckpt = load_run(run_dirs[0])
        return model, [config], [ckpt], default_temperature(config) if temperature is None else temperature
    model, configs, ckpts = load_ensemble(run_dirs)
    return model, configs, ckpts, 1.0 if temperature is None else temperature


def add_mask_options(p: argparse.ArgumentParser, threshold_help: str) -> None:
    """The flags that turn a model's logits into masks, the same for evaluate.py and predict.py:
    ``--threshold``, ``--temperature``, ``--postprocess`` (checked by :func:`mask_options`)."""
    p.add_argument("--threshold", type=float, default=0.5, help=threshold_help)
    p.add_argument(
        "--temperature",
        type=float,
        help="probabilities as sigmoid(T * logit): no mask at threshold 0.5 changes, T > 1 makes "
        "the probabilities more confident, T < 1 less (default: "
        f"{FOCAL_TEMPERATURE:g} for a run trained with the focal loss at alpha 0.75 and gamma 2, "
        "whose probabilities it calibrates; 1 for every other run; for an ONNX file, the one it "
        "names, which the export records from its run(s), else 1); for an ensemble (several --run of "
        "predict.py, evaluate.py --ensemble), T applies to the mean of the runs' probabilities, each "
        "run's own default being applied before the mean",
    )
    p.add_argument(
        "--postprocess",
        default="none",
        help="comma list applied to each thresholded mask: largest (keep the largest region), "
        "min-area:F (drop regions under a fraction F of the frame), fill-holes; or none",
    )


def mask_options(args: argparse.Namespace) -> list[tuple[str, float]]:
    """Check the flags of :func:`add_mask_options` (:class:`UserError` naming the flag) and
    return the parsed ``--postprocess`` steps."""
    if not 0 <= args.threshold <= 1:
        raise UserError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.temperature is not None and not 0 < args.temperature < math.inf:  # also refuses nan
        raise UserError(f"--temperature must be a number above 0, got {args.temperature}")
    return postprocess.parse_postprocess(args.postprocess)


def prepare(image: np.ndarray, size: int) -> torch.Tensor:
    """``image (H, W, 3)`` RGB uint8 -> ``(3, size, size)`` uint8, exactly as training resized it."""
    return torch.from_numpy(np.ascontiguousarray(resize_image(image, size).transpose(2, 0, 1)))


def to_size(prob: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Probabilities ``(N, 1, S, S)`` -> ``(N, 1, height, width)``, bilinear, in [0, 1].

    Resizing probabilities (not a thresholded mask) keeps the boundary smooth: the 0.5
    contour of the resized map runs between the model's pixels, where its boundary lies.
    """
    if prob.shape[-2:] == (height, width):
        return prob
    out = F.interpolate(prob.float(), size=(height, width), mode="bilinear", align_corners=False)
    return out.clamp_(0, 1)


# Where an exported file names the temperature for its resized probabilities (ONNX
# metadata_props, torch.export extra_files): unet_scratch.export writes it, OnnxModel reads it.
TEMPERATURE_KEY = "unet_scratch.temperature"


class OnnxModel(nn.Module):
    """An exported ONNX model run by ONNX Runtime behind the PyTorch model's interface:
    ``(B, 3, S, S)`` float in [0, 1] -> ``(B, 1, S, S)`` logits, on the CPU.

    ``input_size`` is the exported graph's spatial size (its batch axis is dynamic);
    :attr:`temperature` the one its metadata names (``TEMPERATURE_KEY``), None for a file without
    it (exported elsewhere, or by a version of this project from before it wrote one).
    """

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise UserError(
                "--onnx needs ONNX Runtime: pip install onnxruntime (part of the [export] extra)"
            ) from e
        path = onnx_path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own types for bad files
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            fix = (
                f": a checkpoint goes with --run {path}, or export it first "
                f"(python -m unet_scratch.export --run {path} --format onnx --out model.onnx)"
                if path.suffix in (".pt", ".pth")
                else ": export it again with python -m unet_scratch.export"
            )
            raise UserError(f"{path} is not a model ONNX Runtime can load ({reason}){fix}") from e
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        height, width = inp.shape[-2:]
        if not (isinstance(height, int) and height == width):
            raise UserError(f"{path}: expected a square, fixed input size, got {inp.shape}")
        self.input_size = height
        self.path = path
        self.named_temperature = self.session.get_modelmeta().custom_metadata_map.get(TEMPERATURE_KEY)

    @property
    def temperature(self) -> float | None:
        """The temperature the file's metadata names, None if it names none; read only when asked
        for, so that a bad value does not stop a caller who gives its own (``--temperature``)."""
        named = self.named_temperature
        if named is None:
            return None
        try:
            value = float(named)
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):  # also refuses nan
            raise UserError(
                f"{self.path}: its metadata {TEMPERATURE_KEY} is {named!r}, not a positive number: "
                "pass --temperature T, or export it again with python -m unet_scratch.export"
            )
        return value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: feed})[0])
