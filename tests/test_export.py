"""Export: ONNX (run by ONNX Runtime, dynamic batch) and torch.export programs give PyTorch's
logits; predict.py --onnx gives predict.py --run's masks."""

from __future__ import annotations

import contextlib
import copy
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unet_scratch.checkpoint import atomic_torch_save
from unet_scratch.config import TrainConfig
from unet_scratch.engine import build_model
from unet_scratch.export import main as export_main
from unet_scratch.inference import FOCAL_TEMPERATURE, OnnxModel, load_run
from unet_scratch.predict import main as predict_main
from unet_scratch.synthetic import make_frame

SIZE = 64


def random_run(run: Path, seed: int = 47, loss: str = "dice") -> Path:
    """A run with random weights (from ``seed``) and BatchNorm statistics measured on random
    frames, as training leaves them: a non-trivial function with activations and logits of a
    trained model's size."""
    run.mkdir(parents=True)
    # the normalisation is exported too
    config = TrainConfig(input_size=SIZE, normalization="imagenet", seed=seed, loss=loss)
    model = build_model(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # a plain average over the batches below
        model.train()
        for _ in range(3):
            model(torch.rand(8, 3, SIZE, SIZE, generator=g))
        # logits of a trained model's size (|logit| up to ~10), where 1e-4 is a meaningful tolerance
        scale = model.eval()(torch.rand(2, 3, SIZE, SIZE, generator=g)).abs().max() / 10
        model.head.weight.div_(scale)
        model.head.bias.zero_()
    atomic_torch_save({"model": model.state_dict(), "config": config.to_dict(), "epoch": 1}, run / "best.pt")
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_run(tmp_path_factory.mktemp("runs") / "r")


@pytest.fixture(scope="module")
def onnx_file(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert export_main(["--run", str(run), "--format", "onnx", "--out", str(out)]) == 0
    # the parity line export prints for the user must be true too (a model left in training
    # mode when exported printed a gap of ~6 there)
    gap = re.search(r"max \|logit difference\| (\S+)", printed.getvalue())
    assert gap is not None and float(gap.group(1)) < 1e-3, printed.getvalue()
    return out


@pytest.mark.parametrize("batch", [1, 5])  # the batch axis is dynamic
def test_onnx_runtime_gives_pytorchs_logits(run: Path, onnx_file: Path, batch: int) -> None:
    """ONNX Runtime against the same network computed in float64 (the reference): it must be as
    close to it as PyTorch's own float32 forward is. (This random network is less well
    conditioned than a trained one: its float32 forward is ~3e-4 off float64, where a trained
    model's is ~5e-5; on the trained fold-1 model ONNX Runtime and PyTorch differ by 3e-5.)"""
    model, _, _ = load_run(run)
    # frames unlike the noise the BatchNorm statistics were measured on: a graph exported in
    # training mode (normalising by the batch's own statistics) would give other logits
    x = torch.stack([torch.from_numpy(make_frame(n, height=SIZE, width=SIZE)[0]) for n in range(batch)])
    x = x.permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        fp32 = model(x)
        fp64 = copy.deepcopy(model).double()(x.double())
    got = OnnxModel(onnx_file)(x)
    assert got.shape == (batch, 1, SIZE, SIZE) and got.dtype == torch.float32
    assert 1 < fp64.abs().max() < 100  # a real output, of a trained model's scale
    torch_error = (fp32.double() - fp64).abs().max().item()
    onnx_error = (got.double() - fp64).abs().max().item()
    assert onnx_error <= 2 * torch_error + 1e-6
    assert (got - fp32).abs().max().item() < 1e-3


def test_predict_with_onnx_gives_the_same_masks(run: Path, onnx_file: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for n, (h, w) in enumerate([(288, 384), (100, 90)], start=1):
        Image.fromarray(make_frame(n, height=h, width=w)[0]).save(images / f"{n}.png")
    args = [str(images), "--device", "cpu", "--probabilities"]
    # fp32 on both sides: with --amp auto a CPU with AVX-512 BF16 would run PyTorch in bf16
    assert predict_main(["--run", str(run), *args, "--amp", "off", "--out", str(tmp_path / "torch")]) == 0
    assert predict_main(["--onnx", str(onnx_file), *args, "--out", str(tmp_path / "onnx")]) == 0
    for n in (1, 2):
        a, b = (np.asarray(Image.open(tmp_path / d / f"{n}_prob.png")).astype(int) for d in ("torch", "onnx"))
        # this random network's float32 logits are ~3e-4 uncertain (see above): probabilities agree to
        # 1e-3, and the masks wherever the probability is not within that of the threshold
        assert np.abs(a - b).max() <= 65
        decided = np.abs(a - 32767.5) > 65
        assert decided.mean() > 0.99 and np.array_equal((a > 32767)[decided], (b > 32767)[decided])
        assert 0.01 < (a > 32767).mean() < 0.99  # a mask with both classes, so the comparison means something


def test_torch_export_program(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt2"
    assert export_main(["--run", str(run), "--format", "exported", "--out", str(out)]) == 0
    module = torch.export.load(out).module()
    model, _, _ = load_run(run)
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(module(x), model(x), rtol=1e-5, atol=1e-5)


def test_runs_exported_as_one_model(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--run A --run B``: one program whose logits are the logit of the mean of the members'
    probabilities, the focal member's at its temperature 3.7 (recomputed here from the members)."""
    focal = random_run(tmp_path / "focal", seed=48, loss="focal")
    out = tmp_path / "ensemble.pt2"
    args = ["--run", str(run), "--run", str(focal), "--format", "exported", "--out", str(out)]
    assert export_main(args) == 0
    assert "mean probability of 2 runs" in capsys.readouterr().out
    module = torch.export.load(out).module()
    (a, _, _), (b, _, _) = load_run(run), load_run(focal)
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        za, zb = a(x), b(x)
        expected = torch.logit((torch.sigmoid(za) + torch.sigmoid(FOCAL_TEMPERATURE * zb)) / 2)
        got = module(x)
    assert (za - zb).abs().mean() > 1  # two different members, so dropping one would show
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_export_of_a_bad_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert (
        export_main(["--run", str(tmp_path / "empty"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no best.pt" in err and not (tmp_path / "m.onnx").exists()
