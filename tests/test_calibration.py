"""--temperature: probabilities sigmoid(T * logit), masks at 0.5 unchanged, in the loop's predict,
evaluate.py (against closed forms on constant-output runs) and predict.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unet_scratch.config import TrainConfig
from unet_scratch.data import load_frames
from unet_scratch.engine import predict
from unet_scratch.evaluate import main as evaluate_main
from unet_scratch.inference import FOCAL_TEMPERATURE, default_temperature, load_run, prepare, temper
from unet_scratch.metrics import soft_dice
from unet_scratch.predict import main as predict_main
from unet_scratch.synthetic import make_frame

from .scripts import load_script
from .test_evaluate import expected_scores, make_run
from .test_export import random_run


def test_temper_is_sigmoid_of_the_scaled_logit_and_keeps_every_side_of_one_half() -> None:
    logits = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    prob = torch.sigmoid(logits).float()
    for t in (0.5, 1.0, 3.7):
        tempered = temper(prob, t)
        want = 1 / (1 + np.exp(-t * logits.numpy()))  # from the logits, independent of torch.logit
        np.testing.assert_allclose(tempered.double().numpy(), want, rtol=2e-5, atol=1e-6)
        assert torch.equal(tempered > 0.5, prob > 0.5)
    sharp = temper(prob, 3.7)
    assert ((sharp - 0.5).abs() >= (prob - 0.5).abs() - 1e-6).all()  # T > 1: further from 0.5
    edges = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])  # saturated probabilities stay 0 and 1
    assert temper(edges, 3.0).tolist() == pytest.approx([0.0, 1 / 28, 0.5, 27 / 28, 1.0])


@pytest.fixture()
def runs(tmp_path: Path, synthetic_root: Path) -> Path:
    runs = tmp_path / "runs"
    make_run(runs, "all-polyp", "focal", 64, +0.5, synthetic_root)  # logit +0.5 everywhere
    return runs


def test_evaluate_temperature_changes_the_soft_scores_only(
    runs: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    out = {}
    for t in ("1", "3"):
        args = ["--runs", str(runs), "--test-frames", "9-12", "--device", "cpu", "--temperature", t]
        assert evaluate_main([*args, "--json", str(tmp_path / f"t{t}.json")]) == 0
        out[t] = json.loads((tmp_path / f"t{t}.json").read_text())
    assert out["3"]["temperature"] == 3.0
    row1, row3 = out["1"]["runs"][0], out["3"]["runs"][0]
    want1, want3 = expected_scores(synthetic_root, 64, 0.5), expected_scores(synthetic_root, 64, 1.5)
    for key in ("dice", "jaccard", "pooled_dice"):  # the masks: the same at T = 1 and T = 3
        assert row3[key] == pytest.approx(row1[key], abs=1e-12)
    for row, want in ((row1, want1), (row3, want3)):  # sigmoid(3 * 0.5) = sigmoid(1.5)
        assert row["soft_dice"] == pytest.approx(np.mean(want["soft_dice"]), rel=1e-5)
        assert row["soft_jaccard"] == pytest.approx(np.mean(want["soft_jaccard"]), rel=1e-5)
    assert row3["soft_dice"] > 1.02 * row1["soft_dice"]  # a real change, not a rounding


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_temperature_must_be_positive(
    runs: Path, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate_main(["--runs", str(runs), "--device", "cpu", "--temperature", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--temperature must be a number above 0" in err[0]
    image = tmp_path / "a.png"
    Image.fromarray(make_frame(1, height=64, width=64)[0]).save(image)
    run = str(runs / "all-polyp")
    assert predict_main(["--run", run, str(image), "--out", str(tmp_path / "o"), "--temperature", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--temperature must be a number above 0" in err[0]
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_predict_writes_the_tempered_probabilities(runs: Path, tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(make_frame(1, height=48, width=80)[0]).save(image)
    args = ["--run", str(runs / "all-polyp"), str(image), "--device", "cpu", "--probabilities"]
    assert predict_main([*args, "--out", str(tmp_path / "o"), "--temperature", "4"]) == 0
    prob = np.asarray(Image.open(tmp_path / "o" / "a_prob.png")) / 65535
    assert prob.shape == (48, 80)
    np.testing.assert_allclose(prob, 1 / (1 + math.exp(-4 * 0.5)), atol=2 / 65535)
    assert (np.asarray(Image.open(tmp_path / "o" / "a_mask.png")) == 255).all()  # still all polyp


def test_fitted_temperature_recovers_the_one_that_made_the_labels() -> None:
    la = load_script("benchmarks/loss_analysis.py")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200_000, generator=g, dtype=torch.float64) * 2
    for true_t in (0.5, 3.0):  # labels drawn with probability sigmoid(true_t * logit)
        y = (torch.rand(200_000, generator=g, dtype=torch.float64) < torch.sigmoid(true_t * logits)).double()
        fitted = la.fit_temperature(logits, y)
        grid = torch.linspace(0.2, 6, 581, dtype=torch.float64)  # the reference: a grid search, step 0.01
        losses = [torch.nn.functional.binary_cross_entropy_with_logits(t * logits, y).item() for t in grid]
        assert fitted == pytest.approx(grid[int(np.argmin(losses))].item(), abs=0.01)
        assert fitted == pytest.approx(true_t, rel=0.05)


def test_a_focal_run_is_tempered_by_default_and_others_are_not(
    runs: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(runs, "dice-run", "dice", 64, +0.5, synthetic_root)
    make_run(runs, "focal-other-alpha", "focal", 64, +0.5, synthetic_root)
    ckpt = torch.load(runs / "focal-other-alpha" / "best.pt", weights_only=True)
    assert ckpt["config"]["focal_alpha"] == 0.75
    ckpt["config"]["focal_alpha"] = 0.5  # a temperature fitted at alpha 0.75 does not apply
    torch.save(ckpt, runs / "focal-other-alpha" / "best.pt")
    args = ["--runs", str(runs), "--test-frames", "9-12", "--device", "cpu"]
    assert evaluate_main([*args, "--json", str(tmp_path / "r.json")]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["runs"]}
    want = {"all-polyp": FOCAL_TEMPERATURE, "dice-run": 1.0, "focal-other-alpha": 1.0}
    for name, t in want.items():
        assert rows[name]["temperature"] == t
        soft = np.mean(expected_scores(synthetic_root, 64, 0.5 * t)["soft_dice"])
        assert rows[name]["soft_dice"] == pytest.approx(soft, rel=1e-5)
    assert f"temperature {FOCAL_TEMPERATURE:g} for focal runs, else 1" in capsys.readouterr().out
    # the temperature was fitted at alpha 0.75 and gamma 2: another gamma gets none either
    for gamma, t in ((1.0, 1.0), (2.0, FOCAL_TEMPERATURE)):
        assert default_temperature(TrainConfig(loss="focal", focal_alpha=0.75, focal_gamma=gamma)) == t

    image = tmp_path / "a.png"
    Image.fromarray(make_frame(1, height=48, width=80)[0]).save(image)
    for run, t in (("all-polyp", FOCAL_TEMPERATURE), ("dice-run", 1.0)):
        out = tmp_path / run
        args = ["--run", str(runs / run), str(image), "--out", str(out), "--probabilities", "--device", "cpu"]
        assert predict_main(args) == 0
        prob = np.asarray(Image.open(out / "a_prob.png")) / 65535
        np.testing.assert_allclose(prob, 1 / (1 + math.exp(-t * 0.5)), atol=2 / 65535)


def test_no_mask_changes_with_the_temperature_after_resizing_or_tta(tmp_path: Path) -> None:
    """A random network, so the logits vary from pixel to pixel: the masks predict.py writes at the
    image's own size (probabilities resized back) and with TTA (probabilities averaged) must be
    the same at every temperature: T is applied to the final map."""
    run = random_run(tmp_path / "random")
    image = tmp_path / "a.png"
    Image.fromarray(make_frame(3, height=100, width=90)[0]).save(image)
    masks = {}
    for t in ("1", "5"):
        for tta in ([], ["--tta"]):
            out = tmp_path / f"t{t}{len(tta)}"
            args = ["--run", str(run), str(image), "--out", str(out), "--temperature", t, *tta]
            assert predict_main([*args, "--device", "cpu", "--amp", "off"]) == 0
            masks[t, len(tta)] = np.asarray(Image.open(out / "a_mask.png"))
    for tta in (0, 1):
        assert 0.05 < (masks["1", tta] > 0).mean() < 0.95  # both classes: the comparison means something
        assert np.array_equal(masks["1", tta], masks["5", tta])


def test_tta_reaches_the_model_in_predict_and_evaluate(tmp_path: Path, synthetic_root: Path) -> None:
    """--tta: predict.py's probability map and evaluate.py's soft Dice are those of the loop's
    predict with the four flips averaged, on a random network whose flips disagree (so a --tta
    dropped on the way gives other numbers)."""
    run = random_run(tmp_path / "random")
    model = load_run(run)[0]
    frame = make_frame(3, height=64, width=64)[0]  # the run's input size: no resizing
    Image.fromarray(frame).save(tmp_path / "a.png")
    args = ["--run", str(run), str(tmp_path / "a.png"), "--probabilities", "--device", "cpu", "--amp", "off"]
    assert predict_main([*args, "--tta", "--out", str(tmp_path / "o")]) == 0
    written = np.asarray(Image.open(tmp_path / "o" / "a_prob.png")) / 65535
    x = prepare(frame, 64)[None]
    flipped, plain = (predict(model, x, None, tta=tta)[0, 0].numpy() for tta in (True, False))
    assert np.abs(flipped - plain).max() > 1e-2  # the flips disagree for this model
    np.testing.assert_allclose(written, flipped, atol=2 / 65535)
    images, masks = load_frames(synthetic_root, [9, 10, 11, 12], 64)
    scores = {}
    for tta in (True, False):
        args = ["--runs", str(tmp_path), "--data", str(synthetic_root), "--test-frames", "9-12"]
        args += ["--device", "cpu", "--amp", "off", "--json", str(tmp_path / "r.json")]
        assert evaluate_main([*args, *(["--tta"] if tta else [])]) == 0
        scores[tta] = json.loads((tmp_path / "r.json").read_text())["runs"][0]["soft_dice"]
        want = soft_dice(predict(model, images, None, tta=tta), masks.float()).mean().item()
        assert scores[tta] == pytest.approx(want, abs=1e-6)
    assert abs(scores[True] - scores[False]) > 1e-4


def test_full_resolution_masks_do_not_change_with_the_temperature(synthetic_root: Path) -> None:
    from unet_scratch.evaluate import full_resolution_scores

    g = torch.Generator().manual_seed(0)
    logits = torch.nn.functional.interpolate(torch.randn(4, 1, 8, 8, generator=g) * 4, size=(32, 32))
    probs = torch.sigmoid(logits + 0.3 * torch.randn(4, 1, 32, 32, generator=g))  # edges at odd places
    masks = [synthetic_root / "Ground Truth" / f"{n}.tif" for n in (1, 2, 3, 4)]
    plain = full_resolution_scores(probs, masks, [1, 2, 3, 4], 0.5)
    hot = full_resolution_scores(probs, masks, [1, 2, 3, 4], 0.5, temperature=5.0)
    assert plain["per_image"] == hot["per_image"] and 0 < plain["dice"] < 1
