"""benchmarks/ablation.py's report: per-run scores from metrics.csv and the paired comparison."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from .scripts import load_script


def load():  # noqa: ANN201
    return load_script("benchmarks/ablation.py")


def fake_run(
    out: Path, name: str, dice: list[float], iou: list[float] | None = None, epochs: int = 6
) -> None:
    """A finished run folder as train.py leaves it: config.json and one metrics.csv row per epoch."""
    run = out / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"loss": "dice", "epochs": epochs}))
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "train_loss", "val_dice", "val_iou"])
        for e, (d, j) in enumerate(zip(dice, iou or dice), 1):
            w.writerow([e, 0.5, d, j])


def test_paired_comparison_is_recipe_minus_baseline_per_fold_and_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ab = load()
    # baseline and recipe on folds 1 and 2, seed 47; every score of each run is known by hand
    fake_run(tmp_path, "tuned-f1-s47", [0.1, 0.5, 0.2, 0.3, 0.4, 0.3])  # best 0.5 (epoch 2), last 0.3
    fake_run(tmp_path, "tuned-f2-s47", [0.6, 0.6, 0.6, 0.6, 0.6, 0.7])  # best 0.7 (6), last 0.7
    # best by IoU, not by Dice: epoch 3 has the higher IoU although epoch 1 has the higher Dice
    fake_run(tmp_path, "wd05-f1-s47", [0.9, 0.1, 0.4, 0.1, 0.1, 0.1], [0.1, 0.1, 0.8, 0.1, 0.1, 0.1])
    fake_run(tmp_path, "wd05-f2-s47", [0.5, 0.5, 0.5, 0.5, 0.5, 0.8])
    fake_run(tmp_path, "wd05-f3-s47", [0.9] * 6)  # no baseline on fold 3: not a pair
    fake_run(tmp_path, "tuned-f3-s48", [0.1] * 3)  # unfinished (3 of 6 epochs): not a run
    fake_run(tmp_path, "wd05-f3-s48", [0.9] * 6)

    assert ab.run_scores(tmp_path / "wd05-f1-s47") == pytest.approx((0.4, 3, 0.1, 0.16))
    runs = [(1, 47), (2, 47), (3, 47), (3, 48)]
    wd05, tuned = ([ab.run_scores(tmp_path / f"{r}-f{f}-s{s}") for f, s in runs] for r in ("wd05", "tuned"))
    # best epoch: wd05 0.4 and 0.8 against 0.5 and 0.7
    assert ab.paired_differences(wd05, tuned, 0) == pytest.approx([-0.1, 0.1])
    # last epoch: 0.1 and 0.8 against 0.3 and 0.7
    assert ab.paired_differences(wd05, tuned, 2) == pytest.approx([-0.2, 0.1])
    # mean of the last 5 epochs: 0.16 and 0.56 against 0.34 and 0.62
    assert ab.paired_differences(wd05, tuned, 3) == pytest.approx([-0.18, -0.06])

    row = ab.paired_row("wd05", "tuned", "last epoch", [-0.2, 0.1])
    assert row == "| wd05 − tuned | last epoch | -0.050 ± 0.212 | 1 of 2 | -0.200 |"
    one, none = ab.paired_row("wd05", "tuned", "best", [0.03]), ab.paired_row("wd05", "tuned", "best", [])
    assert one == "| wd05 − tuned | best | +0.030 | 1 of 1 | +0.030 |"
    assert none == "| wd05 − tuned | best | — | 0 of 0 | — |"
    tie = ab.paired_row("wd05", "tuned", "best", [0.0, 0.02])  # a tie is not a win
    assert tie == "| wd05 − tuned | best | +0.010 ± 0.014 | 1 of 2 | +0.000 |"

    # the CLI prints the same rows from the run folders, without training anything
    assert ab.main(["--data", "unused", "--report-only", "--recipes", "tuned,wd05", "--folds", "1,2,3",
                    "--seeds", "47,48", "--out", str(tmp_path)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| wd05 − tuned | best epoch | +0.000 ± 0.141 | 1 of 2 | -0.100 |" in out
    assert "| wd05 − tuned | last 5 epochs | -0.120 ± 0.085 | 0 of 2 | -0.180 |" in out
    # --baseline turns the comparison round
    ab.main(["--data", "unused", "--report-only", "--recipes", "tuned,wd05", "--folds", "1,2",
             "--out", str(tmp_path), "--baseline", "wd05"])  # fmt: skip
    assert "| tuned − wd05 | last epoch | +0.050 ± 0.212 | 1 of 2 | -0.100 |" in capsys.readouterr().out


def test_every_recipe_is_train_flags_the_script_does_not_set_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe is train.py flags; one the script appends itself (--epochs, --seed, ...) would be
    silently overridden, since the later flag wins, and a run would train the defaults by
    another name."""
    from unet_scratch.train import build_parser

    ab = load()
    # the flags main() appends after a recipe's, as it passes them to train.py (nothing trains)
    passed: list[list[str]] = []
    monkeypatch.setattr(ab, "train_main", lambda flags: passed.append(flags) or 0)
    ab.main(["--data", "unused", "--recipes", "tuned", "--folds", "1", "--seeds", "47",
             "--out", str(tmp_path)])  # fmt: skip
    own = {f for f in passed[0][len(ab.RECIPES["tuned"]) :] if f.startswith("--")}
    assert {"--epochs", "--seed", "--name"} <= own

    parser = build_parser()
    for recipe, flags in ab.RECIPES.items():
        parser.parse_args(flags)  # an unknown flag or a bad value exits here
        given = {f for f in flags if f.startswith("--")}
        assert not given & own, f"{recipe} sets {given & own}, which ablation.py sets itself"


def test_against_compares_each_recipe_with_itself_in_another_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--against DIR: each recipe here minus the same recipe, fold and seed in DIR (e.g. 40
    epochs against 20), on every score; a DIR that is --out itself, holds none of the runs or
    does not exist is a one-line error before anything trains."""
    ab = load()
    long, short = tmp_path / "e6", tmp_path / "e3"
    fake_run(long, "tuned-f1-s47", [0.2, 0.4, 0.5, 0.6, 0.7, 0.8])  # best 0.8, last 0.8, last 5 0.6
    fake_run(short, "tuned-f1-s47", [0.1, 0.3, 0.2], epochs=3)  # best 0.3, last 0.2, last 5 0.2
    fake_run(long, "tuned-f1-s48", [0.4] * 6)  # best, last and last 5 0.4
    fake_run(short, "tuned-f1-s48", [0.1, 0.2, 0.3], epochs=3)  # best 0.3, last 0.3, last 5 0.2
    fake_run(long, "tuned-f2-s47", [0.5] * 5 + [0.6])  # best 0.6, last 0.6, last 5 0.52
    fake_run(short, "tuned-f2-s47", [0.7, 0.4, 0.4], epochs=3)  # best 0.7, last 0.4, last 5 0.5
    fake_run(long, "tuned-f2-s48", [0.9] * 6)  # nothing to pair with in `short`
    fake_run(long, "wd05-f1-s47", [0.3] * 6)  # 0.3 everywhere, as tuned-f1-s47's best there
    fake_run(short, "wd05-f1-s47", [0.1] * 3, epochs=3)
    argv = ["--data", "unused", "--report-only", "--recipes", "tuned,wd05", "--folds", "1,2",
            "--seeds", "47,48"]  # fmt: skip

    assert ab.main([*argv, "--out", str(long), "--against", str(short)]) == 0
    out = capsys.readouterr().out
    tuned, wd05 = f"| tuned ({long}) − tuned ({short})", f"| wd05 ({long}) − wd05 ({short})"
    assert f"{tuned} | best epoch | +0.167 ± 0.306 | 2 of 3 | -0.100 |" in out  # 0.5, 0.1, -0.1
    assert f"{tuned} | last epoch | +0.300 ± 0.265 | 3 of 3 | +0.100 |" in out  # 0.6, 0.1, 0.2
    assert f"{tuned} | last 5 epochs | +0.207 ± 0.190 | 3 of 3 | +0.020 |" in out  # 0.4, 0.2, 0.02
    assert f"{wd05} | best epoch | +0.200 | 1 of 1 | +0.200 |" in out  # with itself, not with tuned

    monkeypatch.chdir(tmp_path)
    for against, problem in ((str(long), "itself"), ("./e6/", "itself"), (str(tmp_path), "none of"),
                             ("nowhere", "nowhere")):  # fmt: skip
        assert ab.main([*argv, "--out", "e6", "--against", against]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and problem in err


def test_each_fold_trains_on_the_rest_of_1_to_428_and_finished_runs_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every fold validates on its own sequences and trains on all the other frames of 1-428,
    none of them twice and none left out; a run that finished is not trained again (a grid
    restarted after a crash picks up where it stopped)."""
    from unet_scratch.data import parse_frames

    ab = load()
    fake_run(tmp_path, "tuned-f2-s47", [0.5] * 6)  # finished (6 of 6 epochs)
    fake_run(tmp_path, "tuned-f3-s47", [0.5] * 3)  # stopped after 3 of 6: trained again
    passed: list[list[str]] = []
    monkeypatch.setattr(ab, "train_main", lambda flags: passed.append(flags) or 0)
    folds = ",".join(map(str, ab.FOLDS))
    assert ab.main(["--data", "unused", "--recipes", "tuned", "--folds", folds, "--out", str(tmp_path),
                    "--epochs", "6"]) == 0  # fmt: skip

    def flag(flags: list[str], name: str) -> str:
        return flags[len(flags) - 1 - flags[::-1].index(name) + 1]  # the last one given wins

    trained = {flag(f, "--name"): f for f in passed}
    assert sorted(trained) == sorted(f"tuned-f{k}-s47" for k in ab.FOLDS if k != 2)
    for k, frames in ab.FOLDS.items():
        if k == 2:
            continue
        flags = trained[f"tuned-f{k}-s47"]
        val, train = parse_frames(flag(flags, "--val-frames")), parse_frames(flag(flags, "--train-frames"))
        assert val == parse_frames(frames) and not set(val) & set(train)
        assert sorted(val + train) == list(range(1, 429))


def test_the_per_recipe_tables_and_a_partial_against_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ab = load()
    fake_run(tmp_path / "a", "tuned-f1-s47", [0.1, 0.5, 0.2, 0.3, 0.4, 0.3])  # best 0.5 (epoch 2), last 0.3
    fake_run(tmp_path / "a", "tuned-f2-s47", [0.6, 0.6, 0.6, 0.6, 0.6, 0.7])  # best 0.7 (epoch 6), last 0.7
    fake_run(tmp_path / "b", "tuned-f2-s47", [0.4] * 6)  # only fold 2 there: still a folder to compare with
    argv = ["--data", "unused", "--report-only", "--recipes", "tuned", "--folds", "1,2"]
    argv += ["--out", str(tmp_path / "a")]
    assert ab.main([*argv, "--against", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| tuned | 0.600 ± 0.141 | 0.500 (ep 2) | 0.700 (ep 6) |" in out  # best epoch, and which
    assert "| tuned | 0.500 ± 0.283 | 0.300 | 0.700 |" in out  # last epoch: no epoch to name
    assert "| tuned | 0.480 ± 0.198 | 0.340 | 0.620 |" in out  # mean of the last 5
    assert "| best epoch | +0.300 | 1 of 1 | +0.300 |" in out  # fold 2: 0.7 - 0.4
