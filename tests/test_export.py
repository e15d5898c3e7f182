"""Export: ONNX (run by ONNX Runtime, dynamic batch) and torch.export programs give PyTorch's
logits and name the run's temperature; predict.py --onnx gives predict.py --run's probabilities
and masks, tempered alike."""

from __future__ import annotations

import contextlib
import copy
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unet_scratch.checkpoint import atomic_torch_save
from unet_scratch.config import TrainConfig
from unet_scratch.engine import build_model
from unet_scratch.errors import UserError
from unet_scratch.export import main as export_main
from unet_scratch.inference import FOCAL_TEMPERATURE, TEMPERATURE_KEY, Ensemble, OnnxModel, load_run
from unet_scratch.predict import main as predict_main
from unet_scratch.synthetic import make_frame

ROOT = Path(__file__).resolve().parents[1]

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
    # a focal run: the one loss whose default temperature (3.7) is not 1, so a file that
    # forgot it, or a predict.py --onnx that ignored it, shows in the probabilities
    return random_run(tmp_path_factory.mktemp("runs") / "r", loss="focal")


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
    conditioned than a trained one: its float32 forward is 3e-4 to 5e-4 off float64, depending on
    the CPU, where a trained model's is ~5e-5; on the trained fold-1 model ONNX Runtime and
    PyTorch differ by 3e-5.)"""
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
    assert torch_error < 1e-3  # float32 is close enough to float64 for the comparison to mean something


def write_images(folder: Path) -> Path:
    folder.mkdir()
    for n, (h, w) in enumerate([(288, 384), (100, 90)], start=1):
        Image.fromarray(make_frame(n, height=h, width=w)[0]).save(folder / f"{n}.png")
    return folder


def probability_pngs(folder: Path) -> list[np.ndarray]:
    """predict.py's ``N_prob.png`` of the two images of :func:`write_images`, 16-bit, as ints."""
    return [np.asarray(Image.open(folder / f"{n}_prob.png")).astype(int) for n in (1, 2)]


def test_onnx_file_names_the_runs_temperature(onnx_file: Path) -> None:
    assert OnnxModel(onnx_file).temperature == FOCAL_TEMPERATURE


def test_an_opset_the_model_cannot_be_converted_to_is_refused(
    run: Path, onnx_file: Path, tmp_path: Path
) -> None:
    """The exporter writes opset 18 and later, older ones by a conversion that fails for this
    model (no adapter for Identity below 17): one line and no file, not a traceback, exit 0 and
    a file of opset 18 that --opset 13 had asked not to be."""
    import onnx

    assert [(o.domain, o.version) for o in onnx.load(str(onnx_file)).opset_import] == [("", 18)]
    out = tmp_path / "old.onnx"
    # in a fresh interpreter, as a user runs it: logging's stderr is not pytest's captured one
    args = ["--run", str(run), "--format", "onnx", "--out", str(out), "--opset", "13"]
    done = subprocess.run(
        [sys.executable, "-m", "unet_scratch.export", *args], capture_output=True, text=True, cwd=ROOT
    )
    err = done.stderr
    assert done.returncode == 2 and err == (
        "error: --opset 13: the exporter could not convert this model to opset 13 (it stays at 18): "
        f"use an opset from 18 to {onnx.defs.onnx_opset_version()}\n"
    )
    assert not out.exists()


def test_predict_with_onnx_gives_the_same_probabilities(
    run: Path, onnx_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The focal run's probabilities from its ONNX file, tempered by the 3.7 the file names (after
    resizing back, as --run does), are --run's; the header says where the temperature came from."""
    args = [str(write_images(tmp_path / "images")), "--device", "cpu", "--probabilities"]
    # fp32 on both sides: with --amp auto a CPU with AVX-512 BF16 would run PyTorch in bf16
    assert predict_main(["--run", str(run), *args, "--amp", "off", "--out", str(tmp_path / "torch")]) == 0
    capsys.readouterr()
    assert predict_main(["--onnx", str(onnx_file), *args, "--out", str(tmp_path / "onnx")]) == 0
    header = capsys.readouterr().out
    assert f"model: {onnx_file} (ONNX Runtime, cpu)" in header  # ONNX Runtime's CPU provider
    assert "temperature 3.7 (the file's)" in header
    for a, b in zip(probability_pngs(tmp_path / "torch"), probability_pngs(tmp_path / "onnx")):
        # this random network's float32 logits were seen up to 5e-4 off float64 on each side
        # (see above), so up to 1e-3 apart, 3.7e-3 once tempered by 3.7, and the probabilities
        # (slope <= 1/4) 1e-3: they must agree to 2e-3 (131 steps of 65535), and the masks
        # wherever the probability is not within that of the threshold
        assert np.abs(a - b).max() <= 131
        decided = np.abs(a - 32767.5) > 131
        assert decided.mean() > 0.99 and np.array_equal((a > 32767)[decided], (b > 32767)[decided])
        assert 0.01 < (a > 32767).mean() < 0.99  # a mask with both classes, so the comparison means something
    # tempered by the file's 3.7, not merely alike on both sides: against the same file's
    # probabilities at T = 1, p = sigmoid(3.7 logit(u)) pixel by pixel (the PNGs hold round(65535 p);
    # the map's slope is at most 3.7, so half a step of u moves p by < 2 steps)
    untempered = ["--onnx", str(onnx_file), *args, "--temperature", "1", "--out", str(tmp_path / "one")]
    assert predict_main(untempered) == 0
    for b, u in zip(probability_pngs(tmp_path / "onnx"), probability_pngs(tmp_path / "one")):
        band = (u > 655) & (u < 64880)  # away from 0 and 1, where logit(u) is well defined
        assert band.mean() > 0.01
        q = u[band] / 65535
        expected = 65535 / (1 + np.exp(-FOCAL_TEMPERATURE * np.log(q / (1 - q))))
        assert np.abs(b[band] - expected).max() <= 4


def test_onnx_file_without_or_with_a_bad_temperature(
    onnx_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that names no temperature (exported elsewhere or earlier) gets 1, and the header
    says so; one whose metadata is not a positive number is refused in one line, exit 2, nothing
    written, unless --temperature is given."""
    import onnx

    proto = onnx.load(str(onnx_file))
    ours = [e for e in proto.metadata_props if e.key == TEMPERATURE_KEY]
    assert len(ours) == 1
    proto.metadata_props.remove(ours[0])
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    bad = proto.metadata_props.add(key=TEMPERATURE_KEY, value="warm")

    images = write_images(tmp_path / "images")
    args = [str(images), "--probabilities"]
    assert predict_main(["--onnx", str(tmp_path / "bare.onnx"), *args, "--out", str(tmp_path / "bare")]) == 0
    assert "temperature 1 (the file names none)" in capsys.readouterr().out
    given = ["--onnx", str(onnx_file), *args, "--temperature", "1", "--out", str(tmp_path / "one")]
    assert predict_main(given) == 0
    assert "temperature 1," in capsys.readouterr().out  # the one given, not the file's
    for a, b in zip(probability_pngs(tmp_path / "bare"), probability_pngs(tmp_path / "one")):
        assert np.array_equal(a, b)

    for value in ("warm", "", "0", "-3.7", "nan", "inf"):  # not a number; not in (0, inf)
        bad.value = value
        onnx.save(proto, str(tmp_path / "bad.onnx"))
        with pytest.raises(UserError, match="not a positive number"):
            OnnxModel(tmp_path / "bad.onnx").temperature  # noqa: B018 - reading it is the test
    bad.value = "warm"
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    assert predict_main(["--onnx", str(tmp_path / "bad.onnx"), *args, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.onnx" in err and "'warm'" in err and "export it again" in err
    assert not (tmp_path / "bad").exists()
    # the user's own temperature makes the file's unneeded, so a bad one does not stop it
    own = ["--temperature", "1", "--out", str(tmp_path / "bad")]
    assert predict_main(["--onnx", str(tmp_path / "bad.onnx"), *args, *own]) == 0
    for a, b in zip(probability_pngs(tmp_path / "bad"), probability_pngs(tmp_path / "one")):
        assert np.array_equal(a, b)


def test_torch_export_program(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.pt2"
    out.write_bytes(b"an earlier export")  # kept without --overwrite
    assert export_main(["--run", str(run), "--format", "exported", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {out} exists: --overwrite to replace it, or another --out\n"
    assert out.read_bytes() == b"an earlier export"
    assert export_main(["--run", str(run), "--format", "exported", "--out", str(out), "--overwrite"]) == 0
    extra = {TEMPERATURE_KEY: ""}
    module = torch.export.load(out, extra_files=extra).module()
    assert float(extra[TEMPERATURE_KEY]) == FOCAL_TEMPERATURE  # the focal run's, for its caller
    model, _, _ = load_run(run)
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(module(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_checkpoint_file_exports_as_its_run(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint handed on alone (no run folder around it) exports the network it holds;
    ``--out`` onto that file is refused and leaves it as it was."""
    alone = tmp_path / "shared.pt"
    alone.write_bytes((run / "best.pt").read_bytes())
    out = tmp_path / "alone.pt2"
    assert export_main(["--run", str(alone), "--format", "exported", "--out", str(out)]) == 0
    assert f"{alone} -> {out} (exported;" in capsys.readouterr().out
    module = torch.export.load(out).module()
    model, _, _ = load_run(run)
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(module(x), model(x), rtol=1e-5, atol=1e-5)
    assert export_main(["--run", str(alone), "--format", "exported", "--out", str(alone)]) == 2
    assert f"--out {alone} would replace {alone}, which this command reads" in capsys.readouterr().err
    assert alone.read_bytes() == (run / "best.pt").read_bytes()
    # what an output must not replace: the file read, and the run files beside it only in a run
    from unet_scratch.runfolder import run_files

    (tmp_path / "best.pt").write_bytes(b"an earlier download")  # a best.pt alone makes no run
    assert run_files([alone]) == [alone]  # tmp_path is no run: its best.pt may be written
    ran = tmp_path / "ran"  # a run folder as train.py leaves it: config.json is written first
    ran.mkdir()
    (ran / "config.json").write_text("{}")
    (ran / "best.pt").write_bytes(alone.read_bytes())
    assert run_files([ran / "best.pt"])[:3] == [ran / "best.pt", ran / "config.json", ran / "metrics.csv"]


def test_runs_exported_as_one_model(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--run A --run B``: one program whose logits are the logit of the mean of the members'
    probabilities, the focal member's at its temperature 3.7 (recomputed here from the members);
    the file names temperature 1 for its output, the members being tempered inside."""
    dice = random_run(tmp_path / "dice", seed=48, loss="dice")
    alone = tmp_path / "dice.pt2"  # a run of any other loss, on its own, names 1
    assert export_main(["--run", str(dice), "--format", "exported", "--out", str(alone)]) == 0
    extra = {TEMPERATURE_KEY: ""}
    torch.export.load(alone, extra_files=extra)
    assert float(extra[TEMPERATURE_KEY]) == 1
    out = tmp_path / "ensemble.pt2"
    args = ["--run", str(run), "--run", str(dice), "--format", "exported", "--out", str(out)]
    assert export_main(args) == 0
    assert "mean probability of 2 runs" in capsys.readouterr().out
    extra = {TEMPERATURE_KEY: ""}
    module = torch.export.load(out, extra_files=extra).module()
    assert float(extra[TEMPERATURE_KEY]) == 1
    (a, _, _), (b, _, _) = load_run(run), load_run(dice)
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        za, zb = a(x), b(x)
        expected = torch.logit((torch.sigmoid(FOCAL_TEMPERATURE * za) + torch.sigmoid(zb)) / 2)
        got = module(x)
    assert (za - zb).abs().mean() > 1  # two different members, so dropping one would show
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


class Constant(torch.nn.Module):
    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 1, *x.shape[2:]), self.logit)


@pytest.mark.parametrize("sign", [1, -1])
def test_an_ensemble_of_sure_members_gives_finite_logits(sign: int) -> None:
    """Members sure enough that sigmoid rounds to exactly 1 (logits 120 and 110) or underflows to
    0 (-120 and -110) in float32: the logit of their mean probability is about +-110.7, not the
    +-inf of logit(mean(sigmoid)), which an exported graph would hand to its caller's resize."""
    ensemble = Ensemble([Constant(sign * 120.0), Constant(sign * 110.0)], [1.0, 1.0])
    got = ensemble(torch.rand(2, 3, 8, 8))
    # logit(mean p) = log(mean p) - log(mean (1 - p)), each side exact in float64 through sigmoid(-z)
    z = torch.tensor([120.0, 110.0], dtype=torch.float64) * sign
    want = torch.log(torch.sigmoid(z).mean()) - torch.log(torch.sigmoid(-z).mean())
    assert torch.isfinite(got).all() and abs(want.item()) > 110
    torch.testing.assert_close(got, torch.full_like(got, want.item()), rtol=1e-6, atol=1e-5)


def test_export_of_a_bad_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert (
        export_main(["--run", str(tmp_path / "empty"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no best.pt" in err and not (tmp_path / "m.onnx").exists()


def test_export_of_a_run_given_twice_is_refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--run A --run B --run LINK`` where LINK is a symlink to A: the exported ensemble would
    weigh A twice in its mean, so export.py refuses in one line, exit 2, and writes no file."""
    other = random_run(tmp_path / "b", seed=48)
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    out = tmp_path / "twice.pt2"
    runs = ["--run", str(run), "--run", str(other), "--run", str(link)]  # the two spellings apart
    assert export_main([*runs, "--format", "exported", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{link} is given twice (also as {run})" in err
    assert not out.exists() and sorted(tmp_path.iterdir()) == [other, link]


def test_a_file_onnx_runtime_cannot_load_gets_the_fix(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--onnx runs/r/best.pt`` (the checkpoint, not an export) points to --run or the export;
    another unloadable file to exporting again. One line, exit 2, nothing written."""
    pytest.importorskip("onnxruntime")
    image = write_images(tmp_path / "images")
    (tmp_path / "damaged.onnx").write_bytes(b"not a model")
    (tmp_path / "model.pth").write_bytes((run / "best.pt").read_bytes())  # a copy outside its run
    for model, fix in (
        (run / "best.pt", f": a checkpoint goes with --run {run / 'best.pt'}, or export it first (python -m"),
        (tmp_path / "model.pth", f": a checkpoint goes with --run {tmp_path / 'model.pth'}, or export it"),
        (tmp_path / "damaged.onnx", ": export it again with python -m unet_scratch.export"),
    ):
        assert predict_main(["--onnx", str(model), str(image), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {model} is not a model ONNX Runtime can load (") and fix in err, err
        assert err.count("\n") == 1 and not (tmp_path / "o").exists()
    for flag in (["--device", "cuda"], ["--amp", "bf16"]):  # what ONNX Runtime does not do here
        assert predict_main(["--onnx", str(tmp_path / "damaged.onnx"), str(image), *flag]) == 2
        err = capsys.readouterr().err
        assert err == f"error: {' '.join(flag)} applies to --run (PyTorch): --onnx runs on ONNX " \
            "Runtime's CPU provider in fp32; drop it, or give the run with --run\n"
    assert predict_main(["--onnx", str(run), str(image), "--out", str(tmp_path / "o")]) == 2  # a run folder
    assert capsys.readouterr().err == (
        f"error: {run} is a folder: --onnx takes an exported .onnx file; a run folder goes with --run\n"
    )


def test_the_parity_check_measures_the_file_against_the_model(run: Path, onnx_file: Path) -> None:
    """The gap export prints is ONNX Runtime's logits minus PyTorch's: against a model whose
    logits are 1 higher it is 1, not a comparison of the model with itself."""
    from unet_scratch.export import onnx_parity

    model, _, _ = load_run(run)

    class OneHigher(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return model(x) + 1

    class OnePixelHigher(torch.nn.Module):  # the largest gap, not the mean one (1 / (3 * S * S))
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = model(x).clone()
            out[1, 0, 3, 5] += 1
            return out

    assert onnx_parity(model, onnx_file, SIZE) < 1e-3
    assert onnx_parity(OneHigher(), onnx_file, SIZE) == pytest.approx(1.0, abs=1e-3)
    assert onnx_parity(OnePixelHigher(), onnx_file, SIZE) == pytest.approx(1.0, abs=1e-3)
