"""features.py: every stage's output is recorded, the most active channels are the ones drawn,
and the pictures are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F

from unet_scratch import features
from unet_scratch.checkpoint import atomic_torch_save
from unet_scratch.config import TrainConfig
from unet_scratch.data import read_image
from unet_scratch.engine import build_model
from unet_scratch.features import STAGES, main, most_active, stage_modules, stage_outputs
from unet_scratch.inference import prepare
from unet_scratch.synthetic import make_frame


def test_every_stage_is_recorded_with_its_shape() -> None:
    torch.manual_seed(0)
    outputs, prob = stage_outputs(build_model(TrainConfig()), torch.rand(1, 3, 64, 64))
    shapes = [tuple(o.shape) for o in outputs]
    assert len(shapes) == len(STAGES) == 10
    assert shapes == [(64, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2),
                      (256, 4, 4), (128, 8, 8), (64, 16, 16), (32, 32, 32), (16, 64, 64)]  # fmt: skip
    assert prob.shape == (64, 64) and 0 <= prob.min() and prob.max() <= 1


def test_recorded_outputs_are_the_stages_own_values() -> None:
    torch.manual_seed(0)
    model = build_model(TrainConfig(normalization="imagenet")).eval()  # the normalisation comes first
    x = torch.rand(1, 3, 64, 64)
    outputs, prob = stage_outputs(model, x)
    with torch.no_grad():  # the same stages through the modules' own calls, no hooks
        features = model.encoder(model.normalize(x))
        last, decoded = model.decoder(features, return_all=True)
        logits = model.head(last)
    expected = [f[0] for f in features] + [d[0] for d in decoded]
    assert len(outputs) == len(expected) == 10
    for stage, got, want in zip(STAGES, outputs, expected):
        torch.testing.assert_close(got, want, msg=stage)
    torch.testing.assert_close(prob, torch.sigmoid(logits)[0, 0])
    # the stem from the weights, in float64: conv 7x7 / 2 -> BatchNorm (running statistics) -> ReLU
    enc, xn = model.encoder, model.normalize(x).double()
    bn = enc.bn1
    stem = F.relu(
        F.batch_norm(
            F.conv2d(xn, enc.conv1.weight.double(), stride=2, padding=3),
            bn.running_mean.double(), bn.running_var.double(), bn.weight.double(), bn.bias.double(),
            False, 0.0, bn.eps,
        )
    )  # fmt: skip
    torch.testing.assert_close(outputs[0].double(), stem[0], rtol=1e-5, atol=1e-5)
    # the hooks go when the call returns: a second call records ten outputs again, not twenty
    again, _ = stage_outputs(model, x)
    assert len(again) == 10 and not any(m._forward_hooks for m in stage_modules(model))


def test_most_active_channels_by_mean() -> None:
    spike = torch.zeros(2, 2, 2)
    spike[0, 0, 0] = 3.0  # one bright pixel, mean 0.75
    spike[1] = 1.0  # flat, mean 1: the more active channel
    assert [c for c, _ in most_active(spike, 1)] == [1]
    feature = torch.zeros(5, 2, 2)
    feature[3] = torch.tensor([[0.0, 4.0], [4.0, 4.0]])  # mean 3: the most active
    feature[1] = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # mean 2
    picked = most_active(feature, 2)
    assert [c for c, _ in picked] == [3, 1]
    np.testing.assert_allclose(picked[0][1], [[0, 1], [1, 1]])  # each map scaled to [0, 1]
    np.testing.assert_allclose(picked[1][1], [[0, 0.5], [1, 0.5]])


def test_cli_writes_both_pictures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig(input_size=64)
    atomic_torch_save(
        {"model": build_model(config).state_dict(), "config": config.to_dict()}, run / "best.pt"
    )
    tifffile.imwrite(tmp_path / "f.tif", make_frame(3)[0], photometric="minisblack", planarconfig="contig")
    assert (
        main(["--run", str(run), str(tmp_path / "f.tif"), "--out", str(tmp_path / "out"), "--channels", "2"])
        == 0
    )
    from PIL import Image

    for name in ("features.png", "prediction.png"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.size[0] > 300


@pytest.mark.parametrize("regularised", [False, True])
def test_the_initial_model_normalises_by_the_images_own_statistics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, regularised: bool
) -> None:
    """The "initial weights" column is what the first training step computes: BatchNorm with
    the image's own statistics, not the running statistics (0 and 1) a new model starts with,
    which leave its activations unnormalised (logits of sd ~300, a saturated probability map).
    The trained model is drawn in eval mode, as it predicts. Only BatchNorm is in training mode:
    a run with deep supervision (whose training-mode forward returns a tuple), dropped paths or
    head dropout draws its initial model without them."""
    drawn: dict[str, tuple[list[torch.Tensor], torch.Tensor]] = {}
    monkeypatch.setattr(features, "draw", lambda _image, runs, _k, _out: drawn.update(runs) or [])
    run = tmp_path / "run"
    run.mkdir()
    extra = {"deep_supervision": True, "drop_path": 0.5, "head_dropout": 0.5} if regularised else {}
    config = TrainConfig(input_size=64, **extra)
    trained = build_model(config)
    with torch.no_grad():
        trained.encoder.bn1.running_mean.fill_(0.3)  # running statistics unlike any image's
        trained.encoder.bn1.running_var.fill_(4.0)
    atomic_torch_save({"model": trained.state_dict(), "config": config.to_dict()}, run / "best.pt")
    tifffile.imwrite(tmp_path / "f.tif", make_frame(3)[0], photometric="minisblack", planarconfig="contig")
    assert main(["--run", str(run), str(tmp_path / "f.tif"), "--out", str(tmp_path / "out")]) == 0
    x = prepare(read_image(tmp_path / "f.tif"), 64)[None].float() / 255
    initial = build_model(config)  # the run's seed: the same initial weights
    plain = build_model(TrainConfig(input_size=64))  # the initial weights, without auxiliary heads
    plain.load_state_dict(initial.state_dict(), strict=False)
    with torch.no_grad():  # the statistics of the frame and its three flips
        flips = torch.cat([x, x.flip(-1), x.flip(-2), x.flip(-2, -1)])
        want_initial = torch.sigmoid(plain.train()(flips))[0, 0]
        want_trained = torch.sigmoid(trained.eval()(x))[0, 0]
    torch.testing.assert_close(drawn["initial weights"][1], want_initial)
    torch.testing.assert_close(drawn["trained"][1], want_trained)
    assert 0.05 < drawn["initial weights"][1].mean() < 0.95  # not saturated
    # at 32 x 32, layer4 is 1 x 1: one frame alone would give BatchNorm one value per channel
    small = build_model(TrainConfig(input_size=32))
    outputs, prob = stage_outputs(small, x[..., :32, :32], batch_statistics=True)
    assert outputs[4].shape == (2048, 1, 1) and prob.shape == (32, 32)


def test_the_pictures_show_each_model_in_its_own_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read back from the figures: the initial model's channels on the left, the trained one's on
    the right (each its own most active), each row labelled with its stage's shape, and the mask
    the trained model's (the initial one, whose probabilities are about 0.5, would tint others)."""
    pytest.importorskip("matplotlib")
    figures = []
    monkeypatch.setattr(features, "save_figure", lambda fig, path, _flag, **_kw: figures.append(fig) or path)
    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig(input_size=64)
    torch.manual_seed(3)
    trained = build_model(config)
    with torch.no_grad():
        trained.head.weight.zero_()
        trained.head.bias.fill_(-1.0)  # p = 0.27 everywhere: no pixel of the mask
    atomic_torch_save({"model": trained.state_dict(), "config": config.to_dict()}, run / "best.pt")
    tifffile.imwrite(tmp_path / "f.tif", make_frame(3)[0], photometric="minisblack", planarconfig="contig")
    assert main(["--run", str(run), str(tmp_path / "f.tif"), "--out", str(tmp_path), "--channels", "2"]) == 0
    grid, prediction = figures
    axes = np.array(grid.axes).reshape(len(STAGES), 4)
    assert axes[0, 0].get_ylabel() == "stem\n64x32x32" and axes[9, 0].get_ylabel() == "decoder 4\n16x64x64"
    x = prepare(read_image(tmp_path / "f.tif"), 64)[None].float() / 255
    for side, (model, statistics) in enumerate(((build_model(config), True), (trained, False))):
        outputs, _ = stage_outputs(model, x, batch_statistics=statistics)
        for row, feature in enumerate(outputs):
            want = [f"ch {c}" for c, _ in most_active(feature, 2)]
            assert [axes[row, 2 * side + j].get_title() for j in range(2)] == want, (side, STAGES[row])
    image = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(prediction.axes[-1].images[0].get_array(), image)  # the trained mask is empty
