"""The scripts beside the docs: the figures' numbers against closed forms, and the minimal example."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from .scripts import load_script

DOCS = Path(__file__).resolve().parents[1] / "docs"


def load(name: str):  # noqa: ANN201
    return load_script(f"docs/{name}.py")


@pytest.mark.parametrize("fraction, p", [(0.01, 0.1), (0.3, 0.6)])
def test_dice_gradient_at_a_pixel_is_the_closed_form(fraction: float, p: float) -> None:
    lg = load("loss_gradients")
    n = lg.SIZE**2
    area = round(fraction * n)
    # probabilities: polyp 0.8 except pixel 0 (p), background 0.02 except the last pixel (p)
    inter = 0.8 * (area - 1) + p
    psum = inter + 0.02 * (n - area - 1) + p
    s = 1.0
    denominator = psum + area + s
    d_dice = lambda y: (2 * y * denominator - (2 * inter + s)) / denominator**2  # noqa: E731  d(ratio)/dp
    missed, false_positive = lg.pixel_gradients("dice", {}, fraction, p)
    assert missed == pytest.approx(-d_dice(1) * p * (1 - p), rel=1e-9)  # dL/dz = -dD/dp * dp/dz
    assert false_positive == pytest.approx(-d_dice(0) * p * (1 - p), rel=1e-9)


def test_polyp_sizes_are_the_masks_areas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three 10 x 10 frames whose polyps cover 5, 20 and 50 pixels: 5 %, 20 % and 50 %, mean 25 %."""
    import numpy as np
    from PIL import Image

    for folder in ("Original", "Ground Truth"):
        (tmp_path / folder).mkdir()
    for n, area in ((1, 5), (2, 50), (3, 20)):
        mask = np.zeros(100, np.uint8)
        mask[:area] = 255
        Image.fromarray(mask.reshape(10, 10)).save(tmp_path / "Ground Truth" / f"{n}.png")
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "Original" / f"{n}.png")
    lg = load("loss_gradients")
    assert lg.polyp_fractions(tmp_path).tolist() == [0.05, 0.5, 0.2]  # in frame order
    assert lg.main(["--polyp-sizes", str(tmp_path)]) == 0
    assert capsys.readouterr().out == (
        "3 frames: polyps cover 25.0 % of a frame on average, median 20.0 %, from 5.0 to 50.0 %\n"
    )


def test_focal_gradient_at_a_pixel_is_the_closed_form() -> None:
    lg = load("loss_gradients")
    n, p, alpha, gamma = lg.SIZE**2, 0.1, 0.75, 2.0
    # y = 1, p_t = p: d/dz [-(1 - p)^g log p] = (1 - p)^g [g p log p - (1 - p)]... times alpha / n
    d = (1 - p) ** gamma * (gamma * p * math.log(p) - (1 - p))
    missed, _ = lg.pixel_gradients("focal", {"alpha": alpha}, 0.05, p)
    assert missed == pytest.approx(alpha * d / n, rel=1e-9)


def test_minimal_training_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    module = load_script("examples/minimal_train.py")
    dice = module.main(["--steps", "2", "--size", "32", "--frames", "12"])
    out = capsys.readouterr().out
    assert "step    2: Dice loss" in out and "mean Dice on 2 frames it never saw" in out
    assert 0.0 <= dice <= 1.0
    with pytest.raises(SystemExit) as stop:  # a size the U cannot halve five times: one line, no traceback
        module.main(["--size", "100"])
    assert stop.value.code == 2 and "--size must be a positive multiple of 32" in capsys.readouterr().err


def test_focal_optimum_is_the_weighted_posterior_without_focusing() -> None:
    la = load_script("benchmarks/loss_analysis.py")
    for q, alpha in ((0.3, 0.75), (0.9, 0.2), (0.5, 0.5)):
        # gamma 0: alpha-weighted cross-entropy, minimised at alpha q / (alpha q + (1 - alpha)(1 - q))
        assert la.focal_optimum(q, alpha, 0.0) == pytest.approx(
            alpha * q / (alpha * q + (1 - alpha) * (1 - q)), abs=1e-6
        )
    assert la.focal_optimum(0.5, 0.5, 2.0) == pytest.approx(0.5, abs=1e-6)  # symmetric
    assert 0.5 < la.focal_optimum(0.9, 0.5, 2.0) < 0.9  # focusing pulls the optimum towards the middle


def test_bench_conv_layers_times_every_convolution_of_the_model_once_per_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """bench.py --conv-layers: one line per distinct shape, whose call counts add up to every
    Conv2d of the model and whose FLOP/s are those of that shape (checked on the largest)."""
    import re

    import torch

    from unet_scratch.config import TrainConfig
    from unet_scratch.engine import build_model

    bench = load_script("benchmarks/bench.py")
    def fake_time(fn: object, device: object, steps: int, warmup: int) -> float:
        """Run the call once; "take" 1 ms for a forward, 2 for an input gradient, 4 for a weight
        gradient (known by convolution_backward's output mask), 8 for anything else."""
        fn()
        mask = fn.args[-1] if getattr(fn, "args", None) else None
        if getattr(fn, "func", None) is torch.nn.functional.conv2d:
            return 1e-3
        return {(True, False, False): 2e-3, (False, True, False): 4e-3}.get(tuple(mask or ()), 8e-3)

    bench.median_time = fake_time
    bench.conv_layers(torch.device("cpu"), torch.float32, 2, 64, 1, 0)
    lines = capsys.readouterr().out.splitlines()
    row = re.compile(r"\s+(\d+)->(\d+)\s+(\d)x\d/(\d) at\s+(\d+)x(\d+)\s+x(\d+)\s")
    rows = [row.match(line) for line in lines[1:-2]]
    assert all(rows), lines
    model = build_model(TrainConfig())
    assert sum(int(r.group(7)) for r in rows) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert len({r.groups()[:6] for r in rows}) == len(rows)  # distinct shapes
    calls = sum(int(r.group(7)) for r in rows)  # every convolution a step runs: 1 + 2 + 4 ms each
    assert lines[-2] == f"  all convolutions of a step: fwd {calls} ms, grad-input {2 * calls - 2} ms, " \
        f"grad-weight {4 * calls} ms; {7 * calls - 2} ms in all"  # the stem has no input gradient
    stem = next(line for line in lines if line.rstrip().endswith("encoder.conv1"))
    assert "grad-input      -" in stem  # the image needs no gradient
    # decoder block 0: 2048 upsampled + 1024 skip channels at 64 / 16 = 4 pixels a side, 3x3 to 256
    block0 = next(line for line in lines if line.rstrip().endswith("decoder.blocks.0.conv1.0"))
    assert re.match(r"\s+3072->256\s+3x3/1 at\s+4x4\s+x1\s", block0)
    flop = 2 * (2 * 256 * 4 * 4) * (3072 * 9)  # 2 * outputs * multiply-adds per output
    gflops = [float(g) for g in re.findall(r"\(\s*(\d+)\)", block0)]
    assert gflops == pytest.approx([flop / t / 1e9 for t in (1e-3, 2e-3, 4e-3)], abs=0.5)
    # every weight gradient "took" 4 ms, so the first shape is the slowest: the stem, 7x7 with
    # stride 2 and padding 3; its other way is timed at 8 ms, and must give the same gradient
    pattern = r"  encoder.conv1's weight gradient as unfold \+ matmul: 8.00 ms against 4.00 ms"
    other_way = re.fullmatch(pattern + r" \(largest difference (.*) of the largest value\)", lines[-1])
    assert other_way and float(other_way.group(1)) < 1e-5, lines[-1]  # float32: the same gradient
