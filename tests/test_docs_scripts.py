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
