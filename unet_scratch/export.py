"""Export a trained run for deployment outside this package.

    python -m unet_scratch.export --run runs/combined --format onnx --out combined.onnx
    python -m unet_scratch.export --run runs/combined --format exported --out combined.pt2

The exported model is the network of the run's ``best.pt`` (or of the checkpoint file given to
``--run``, as predict.py takes it) in eval mode, input normalisation included:
``(N, 3, S, S)`` float32 RGB in [0, 1] -> ``(N, 1, S, S)`` logits (their sigmoid is the
probability map: resize it back to the frame's size, apply sigmoid(T * logit(p)) with the T the
file names, then the threshold, as predict.py does), with a dynamic batch axis N and the run's
input size S. ``--run`` given more than once exports the runs as one model
(``inference.Ensemble``): one graph holding every member, whose output is the logit of the mean
of the members' probabilities, each member at its own temperature; the file grows by one network
(130 MB) per member. Resizing a frame to S x S (Pillow bicubic) and the probabilities back is the
caller's part, as predict.py does it.

The graph holds no temperature of its own: a single focal-loss run's is applied to the
probabilities *after* they are resized back (``inference.temper``), where no 0.5-contour moves.
So the file says which to apply: ONNX metadata ``unet_scratch.temperature`` (which
``predict.py --onnx`` applies) or, in a ``torch.export`` program, the extra file of that name
(``torch.export.load(FILE, extra_files={"unet_scratch.temperature": ""})`` fills it in; it stays
"" for a file that names none): the run's default temperature (``inference.default_temperature``:
3.7 for a focal run at alpha 0.75 and gamma 2, else 1), and 1 for an ensemble, whose members
are tempered inside.

- ``onnx``: ONNX (opset 18) through ``torch.onnx.export``'s dynamo exporter; needs the
  ``[export]`` extra (onnx, onnxscript; onnxruntime to check it). After writing, the file is run
  by ONNX Runtime on a random batch and compared with PyTorch: the largest difference is printed.
- ``exported``: a ``torch.export`` program (``torch.export.load(FILE).module()`` gives a module
  that needs only torch, not this package; traced in inference mode, it is called as it is:
  torch refuses ``.eval()`` and ``.train()`` on it).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from .errors import ArgumentParser, UserError, exit_status, exit_with
from .files import atomic_write_bytes, check_file
from .inference import TEMPERATURE_KEY, OnnxModel, checkpoint_path, load_runs
from .runfolder import run_files

FORMATS = ("onnx", "exported")


def export_onnx(
    model: torch.nn.Module,
    size: int,
    out: Path,
    opset: int = 18,
    width: int | None = None,
    temperature: float = 1.0,
) -> None:
    """Write ``model`` as ONNX for ``(N, 3, size, width or size)`` inputs, N dynamic, atomically,
    with ``temperature`` (what the caller applies to the resized probabilities) in its metadata."""
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it
    except ImportError as e:
        raise UserError(
            "--format onnx needs the exporter: pip install onnx onnxscript onnxruntime (the [export] extra)"
        ) from e
    example = torch.rand(2, 3, size, width or size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
    # a failed conversion to an older opset logs a traceback there and keeps 18: said below
    logging.getLogger("onnxscript").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: batch}},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
        written = program.model.opset_imports.get("")
        if written != opset:  # the exporter writes 18 and later; older ones only by conversion
            import onnx

            newest = onnx.defs.onnx_opset_version()  # what the installed onnx knows
            raise UserError(
                f"--opset {opset}: the exporter could not convert this model to opset {opset} (it "
                f"stays at {written}): use an opset from 18 to {newest}"
            )
        program.model.metadata_props[TEMPERATURE_KEY] = repr(float(temperature))
        path = Path(tmp) / "model.onnx"
        program.save(str(path), external_data=False)  # one self-contained file (130 MB)
        atomic_write_bytes(path.read_bytes(), out)


def export_program(model: torch.nn.Module, size: int, out: Path, temperature: float = 1.0) -> None:
    """Write ``model`` as a ``torch.export`` program with a dynamic batch axis, atomically, with
    ``temperature`` in its extra file ``TEMPERATURE_KEY``."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.rand(2, 3, size, size),), dynamic_shapes={"x": {0: batch}})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt2"
        torch.export.save(program, path, extra_files={TEMPERATURE_KEY: repr(float(temperature))})
        atomic_write_bytes(path.read_bytes(), out)


@torch.inference_mode()
def onnx_parity(model: torch.nn.Module, path: Path, size: int, batch: int = 3) -> float:
    """Largest absolute logit difference between ONNX Runtime and PyTorch (fp32) on a random batch."""
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    return (OnnxModel(path)(x) - model(x)).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m unet_scratch.export", description=__doc__.splitlines()[0])
    p.add_argument(
        "--run",
        required=True,
        action="append",
        help="run folder whose best.pt is exported, or a checkpoint file train.py wrote (see "
        "predict.py --run); give it more than once to export the runs as one averaged model (an "
        "ensemble, e.g. the seeds of train.py --seeds)",
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx or exported (torch.export)")
    p.add_argument("--out", required=True, help="file to write (e.g. model.onnx, model.pt2)")
    p.add_argument(
        "--opset", type=int, default=18, help="ONNX opset: from 18 to the newest the installed onnx "
        "knows (others are refused when the exporter cannot convert the model to them)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    return exit_status(lambda: export(args))


def export(args: argparse.Namespace) -> int:
    # one run: its network, raw logits; several: the members tempered and averaged inside, so
    # the graph's output is what evaluate.py and predict.py score for the same runs
    # the temperature load_runs gives is predict.py's: one run's own, 1 for an ensemble
    out = check_file(args.out, "--out", inputs=run_files(args.run))  # before the model is read and traced
    if out.exists() and not args.overwrite:  # a model exported earlier is kept unless asked
        raise UserError(f"--out {out} exists: --overwrite to replace it, or another --out")
    model, configs, _, temperature = load_runs(args.run)
    model = model.float().eval()
    size = configs[0].input_size
    if args.format == "onnx":
        export_onnx(model, size, out, args.opset, temperature=temperature)
        if importlib.util.find_spec("onnxruntime") is None:  # optional for exporting
            print("warning: not checked with ONNX Runtime: pip install onnxruntime to check", file=sys.stderr)
        else:  # a file ONNX Runtime cannot load is an error, not a warning
            gap = onnx_parity(model, out, size)
            print(f"ONNX Runtime vs PyTorch, fp32: max |logit difference| {gap:.2e}")
    else:
        export_program(model, size, out, temperature)
    source = " + ".join(str(checkpoint_path(r)) for r in args.run)
    output = "logits" if len(args.run) == 1 else f"logit of the mean probability of {len(args.run)} runs"
    print(
        f"{source} -> {out} ({args.format}; input (N, 3, {size}, {size}) in [0, 1] -> {output}; "
        f"temperature {temperature:g} after resizing back, recorded in the file)"
    )
    return 0


if __name__ == "__main__":
    exit_with(main())
