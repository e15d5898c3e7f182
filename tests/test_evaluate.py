"""evaluate.py: every reported number against a closed form, the run/data rule, labels, files.

The scored runs hold constant-output checkpoints: the head's weights are zero and its bias is
+0.5 or -0.5, so every pixel gets probability sigmoid(+-0.5) whatever the frame. Every score is
then a function of the masks alone (written out below), independent of the code under test.
"""

from __future__ import annotations

import builtins
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unet_scratch.checkpoint import atomic_torch_save
from unet_scratch.config import TrainConfig
from unet_scratch.data import frame_fingerprint, load_frames
from unet_scratch.engine import build_model
from unet_scratch.evaluate import bootstrap_ci, build_parser, describe_role, frames_role, main, members_role
from unet_scratch.files import atomic_write_json
from unet_scratch.inference import FOCAL_TEMPERATURE
from unet_scratch.report import GRID_GAP, GRID_HEADER, natural_key, sort_runs
from unet_scratch.synthetic import write_dataset
from unet_scratch.train import build_parser as build_train_parser

FRAMES = [9, 10, 11, 12]


def make_run(
    runs: Path,
    name: str,
    loss: str,
    size: int,
    head_bias: float,
    data: Path,
    train_frames: str = "1-6",
    val_frames: str = "7-8",
    epochs: int = 20,
) -> Path:
    """A run folder as train.py leaves it, whose model outputs the logit ``head_bias`` everywhere."""
    run = runs / name
    run.mkdir(parents=True)
    config = TrainConfig(
        loss=loss,
        input_size=size,
        seed=1,
        data=str(data),
        train_frames=train_frames,
        val_frames=val_frames,
        epochs=epochs,
    )
    model = build_model(config)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(head_bias)  # +-0.5: exact in bf16 too
    history = [
        {"epoch": 1, "train_loss": 0.9, "val_dice": 0.1, "val_iou": 0.05, "elapsed_seconds": 12.0},
        {"epoch": 2, "train_loss": 0.8, "val_dice": 0.2, "val_iou": 0.1, "elapsed_seconds": 30.0},
    ]
    first = int(train_frames.split("-")[0])
    check = {"frame": first, "sha256": frame_fingerprint(data, first)}
    state = {
        "format": 1,
        "model": model.state_dict(),
        "config": config.to_dict(),
        "epoch": 2,
        "history": history,
        "data_check": check,
    }
    atomic_torch_save(state, run / "best.pt")
    atomic_write_json({**config.to_dict(), "run": {"data_check": check}}, run / "config.json")
    (run / "metrics.csv").write_text(
        "epoch,train_loss,val_dice,val_iou,elapsed_seconds\n1,0.9,0.1,0.05,12.0\n2,0.8,0.2,0.1,30.0\n"
    )
    return run


@pytest.fixture()
def runs(tmp_path: Path, synthetic_root: Path) -> Path:
    runs = tmp_path / "runs"
    make_run(runs, "all-polyp", "dice", 64, +0.5, synthetic_root)  # p = 0.62 > 0.5: every pixel polyp
    make_run(runs, "no-polyp", "focal", 32, -0.5, synthetic_root)  # p = 0.38: nothing predicted
    (runs / "crashed").mkdir()
    atomic_write_json({"loss": "jaccard"}, runs / "crashed" / "config.json")
    return runs


def evaluate(runs: Path, *extra: str) -> int:
    return main(["--runs", str(runs), "--test-frames", "9-12", "--device", "cpu", *extra])


def expected_scores(root: Path, size: int, bias: float) -> dict[str, list[float]]:
    """Closed forms for a constant probability p on every pixel of ``size x size`` frames."""
    _, masks = load_frames(root, FRAMES, size)
    a = masks.flatten(1).sum(1).double().numpy()  # polyp area per frame
    n = size * size
    p = 1 / (1 + math.exp(-bias))
    if p > 0.5:  # prediction = the whole frame
        dice, iou = 2 * a / (a + n), a / n
    else:  # an empty prediction against a non-empty mask
        dice, iou = np.zeros_like(a), np.zeros_like(a)
    return {
        "dice": list(dice),
        "jaccard": list(iou),
        "soft_dice": list(2 * p * a / (p * n + a)),  # smooth 0
        "soft_jaccard": list((p * a + 1) / (p * n + a - p * a + 1)),  # smooth 1
        "pooled_dice": [2 * a.sum() / (a.sum() + len(a) * n) if p > 0.5 else 0.0],
        # pixel counts (tp, fp, fn): the whole frame predicted, or nothing
        "counts": [(int(k), n - int(k), 0) if p > 0.5 else (0, 0, int(k)) for k in a],
    }


def test_every_number_matches_its_closed_form(
    runs: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate(runs, "--json", str(tmp_path / "r.json")) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["dice", "jaccard", "focal"]  # order
    assert "crashed" in lines[2] and "no best.pt" in lines[2]  # reported, not dropped

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["test_frames"] == "9-12" and report["data"] == str(synthetic_root)
    by_name = {r["name"]: r for r in report["runs"]}
    # the focal run's probabilities get the focal loss's calibration temperature by default:
    # sigmoid(T * -0.5); the dice run's stay sigmoid(0.5)
    for name, size, bias in (("all-polyp", 64, 0.5), ("no-polyp", 32, -0.5 * FOCAL_TEMPERATURE)):
        want, row = expected_scores(synthetic_root, size, bias), by_name[name]
        assert row["temperature"] == (1.0 if bias > 0 else FOCAL_TEMPERATURE)
        assert min(want["dice"] + [1.0]) >= 0 and (bias < 0 or min(want["dice"]) > 0)  # masks not empty
        assert row["input_size"] == size  # the checkpoint's size, not a default
        per_image = [row["per_image"][str(n)] for n in FRAMES]
        assert [d["dice"] for d in per_image] == pytest.approx(want["dice"], abs=1e-9)
        assert [d["jaccard"] for d in per_image] == pytest.approx(want["jaccard"], abs=1e-9)
        assert [(d["tp"], d["fp"], d["fn"]) for d in per_image] == want["counts"]
        assert row["dice"] == pytest.approx(np.mean(want["dice"]), abs=1e-9)
        assert row["jaccard"] == pytest.approx(np.mean(want["jaccard"]), abs=1e-9)
        assert row["soft_dice"] == pytest.approx(np.mean(want["soft_dice"]), rel=1e-6)
        assert row["soft_jaccard"] == pytest.approx(np.mean(want["soft_jaccard"]), rel=1e-6)
        assert row["pooled_dice"] == pytest.approx(want["pooled_dice"][0], abs=1e-9)
        assert row["dice_ci95"] == pytest.approx(list(bootstrap_ci(want["dice"])))
        assert row["best_epoch"] == 2 and row["train_seconds"] == 30.0
        assert row["frames_role"] == "held-out"
        table_row = next(line for line in lines if f"| {name} |" in line)
        cells = [c.strip() for c in table_row.strip("|").split("|")]
        assert cells[2:4] == [f"{np.mean(want['dice']):.4f}", f"{np.mean(want['jaccard']):.4f}"]
        assert cells[5] == f"{np.mean(want['soft_dice']):.4f}" and cells[7] == f"{want['pooled_dice'][0]:.4f}"
        assert cells[-2:] == ["2", "0:30"]  # best epoch, training time
    assert "best by held-out Dice: dice: all-polyp, " in out
    assert "held out of training" in out and "test frames" not in out


def test_full_resolution_scores_use_the_original_masks(
    runs: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate(runs, "--full-res", "--json", str(tmp_path / "r.json")) == 0
    row = next(r for r in json.loads((tmp_path / "r.json").read_text())["runs"] if r["name"] == "all-polyp")
    expected = []
    for n in FRAMES:  # every pixel of the 288 x 384 frame predicted polyp: Dice 2a / (a + HW)
        a = float((tifffile.imread(synthetic_root / "Ground Truth" / f"{n}.tif") > 127).sum())
        expected.append(2 * a / (a + 288 * 384))
    assert [row["full_res"]["per_image"][str(n)]["dice"] for n in FRAMES] == pytest.approx(expected, abs=1e-9)
    assert row["full_res"]["dice"] == pytest.approx(np.mean(expected), abs=1e-9)
    assert f"{np.mean(expected):.4f}" in capsys.readouterr().out


def test_threshold_option(runs: Path, synthetic_root: Path, tmp_path: Path) -> None:
    # above the constant probability 0.62 nothing is polyp: Dice 0 for every non-empty mask
    assert evaluate(runs, "--threshold", "0.7", "--json", str(tmp_path / "r.json")) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["threshold"] == 0.7
    row = next(r for r in report["runs"] if r["name"] == "all-polyp")
    assert [row["per_image"][str(n)]["dice"] for n in FRAMES] == [0.0] * 4


def test_a_run_is_not_scored_on_other_data(
    runs: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_dataset(tmp_path / "other", range(1, 13), seed=5)  # same layout, other pixels
    assert evaluate(runs, "--data", str(other)) == 2  # nothing scored
    out, err = capsys.readouterr()
    assert err.startswith("error: no run could be scored (") and err.count("\n") == 1  # not the table alone
    for name in ("all-polyp", "no-polyp"):
        row = next(line for line in out.splitlines() if f"| {name} |" in line)
        assert f"trained on {synthetic_root}, not {other} (frame 1 differs)" in row
        assert "--allow-other-data" in row
    assert evaluate(runs, "--data", str(other), "--allow-other-data") == 0  # the user insists
    # frames 1-4 are the runs' training frames by number, but of another dataset: not called so
    capsys.readouterr()
    assert evaluate(runs, "--data", str(other), "--allow-other-data", "--test-frames", "1-4") == 0
    out, err = capsys.readouterr()
    assert out.startswith(
        f"{other}: frames 1-4 (4 images) of data that runs were not trained on (--allow-other-data): "
        "neither their training nor their test frames, and not test scores\n"
    )
    assert "training frames" not in out + err and "best by other-data Dice" in out
    assert evaluate(runs, "--test-frames", "1-4") == 0  # on their own data, they are training frames
    assert "training frames among them" in capsys.readouterr().out
    # the run's own data, found in its config.json, needs no --data and passes the check
    assert evaluate(runs) == 0 and evaluate(runs, "--data", str(synthetic_root)) == 0


def test_a_lone_checkpoint_is_checked_against_the_data_it_names(
    runs: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a best.pt copied out of its run, into a folder of its own (what evaluate.py tells a user
    # with a lone checkpoint to do): no config.json, so the checkpoint tells the data and loss
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(runs / "all-polyp" / "best.pt", lone / "best.pt")
    other = write_dataset(tmp_path / "other", range(1, 13), seed=5)
    assert evaluate(lone, "--data", str(other)) == 2
    row = next(line for line in capsys.readouterr().out.splitlines() if "| dice | lone |" in line)
    assert f"trained on {synthetic_root}, not {other} (frame 1 differs)" in row
    assert evaluate(lone) == 0  # no --data: the data its config names, which passes the check
    assert "| dice | lone |" in capsys.readouterr().out
    old = torch.load(lone / "best.pt", weights_only=True)
    del old["data_check"]  # a checkpoint from before they carried the fingerprint: scored unchecked
    torch.save(old, lone / "best.pt")
    assert evaluate(lone, "--data", str(other)) == 0


def test_the_data_check_is_the_scored_checkpoints_own(
    runs: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run resumed onto other data (--force) whose later epochs never beat its best keeps the
    earlier session's best.pt while config.json names the new data: the model scored was trained
    on the first data, and is checked against that, not config.json's."""
    other = write_dataset(tmp_path / "other", range(1, 13), seed=5)
    run = runs / "all-polyp"
    config = json.loads((run / "config.json").read_text())
    check = {"frame": 1, "sha256": frame_fingerprint(other, 1)}
    atomic_write_json({**config, "data": str(other), "run": {"data_check": check}}, run / "config.json")
    assert evaluate(runs, "--data", str(other)) == 2
    row = next(line for line in capsys.readouterr().out.splitlines() if "| all-polyp |" in line)
    assert f"trained on {synthetic_root}, not {other} (frame 1 differs)" in row
    assert evaluate(runs, "--data", str(synthetic_root)) == 0


def test_runs_trained_on_different_data_need_data(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_dataset(tmp_path / "other", range(1, 13), seed=5)
    make_run(tmp_path / "runs", "a", "dice", 32, 0.5, synthetic_root)
    make_run(tmp_path / "runs", "b", "dice", 32, 0.5, other)
    assert evaluate(tmp_path / "runs") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained on different data" in err and "pass --data" in err
    # the same folder spelt another way (train.py --data DIR/, a/../DIR) is one dataset
    for spelling in (f"{synthetic_root}/", f"{synthetic_root}/../{synthetic_root.name}"):
        config = json.loads((tmp_path / "runs" / "b" / "config.json").read_text())
        atomic_write_json({**config, "data": spelling}, tmp_path / "runs" / "b" / "config.json")
        assert main(["--runs", str(tmp_path / "runs"), "--test-frames", "9-12", "--device", "cpu"]) == 0
        assert "| a |" in capsys.readouterr().out


def test_labels_name_validation_frames(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", str(runs), "--test-frames", "7-8", "--device", "cpu"]) == 0  # the runs' val frames
    out = capsys.readouterr().out
    assert "validation frames 7-8 (2 images)" in out and "not test scores" in out
    assert "best by validation Dice" in out and "test Dice" not in out


def test_runs_may_be_a_single_run_folder(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate(runs / "all-polyp") == 0
    out = capsys.readouterr().out
    assert "| all-polyp |" in out and "no-polyp" not in out


def test_runs_one_level_up_are_pointed_to(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate(tmp_path) == 2  # tmp_path/runs holds the runs, tmp_path itself none
    err = capsys.readouterr().err
    assert f"{runs} holds runs: python evaluate.py --runs {runs}" in err


def test_a_folder_of_runs_given_as_a_run_is_pointed_to_runs(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``evaluate.py runs/`` (the folder of runs where a run goes): not "no best.pt (not trained
    past epoch 1?)" about runs that trained well, but --runs and the runs themselves."""
    assert main([str(runs), "--test-frames", "9-12", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (
        f"error: {runs} holds runs, it is not one: python evaluate.py --runs {runs} scores them all, "
        f"or name them ({runs / 'all-polyp'}, {runs / 'crashed'}, ...)\n"
    )


def test_no_runs_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", str(tmp_path / "none")]) == 2
    assert "train first" in capsys.readouterr().err


@pytest.mark.parametrize("parser", [build_parser, build_train_parser], ids=["evaluate", "train"])
def test_help_shows_no_empty_defaults(parser) -> None:  # noqa: ANN001
    text = " ".join(parser().format_help().split())  # undo the line wrapping
    assert "(default: )" not in text and "(default: None)" not in text and "(default: False)" not in text
    assert "(default: auto)" in text  # --device, a real default, is still shown


def test_bootstrap_interval() -> None:
    lo, hi = bootstrap_ci([0.5] * 10)
    assert lo == hi == 0.5
    lo, hi = bootstrap_ci([0.0, 1.0] * 50)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.2, abs=0.05)  # ~ 2 * 1.96 * 0.05


def grid_tile(path: Path, row: int, column: int, tile: int = 256) -> np.ndarray:
    """Tile (row, column) of an overlay grid: below the column titles, a white line between tiles."""
    with Image.open(path) as im:
        grid = np.asarray(im)
    y, x = GRID_HEADER + row * (tile + GRID_GAP), column * (tile + GRID_GAP)
    return grid[y : y + tile, x : x + tile]


def test_overlays_are_valid_pngs(runs: Path, tmp_path: Path) -> None:
    assert evaluate(runs, "--overlays", str(tmp_path / "ov"), "--n-overlays", "1") == 0
    with Image.open(tmp_path / "ov" / "all-polyp.png") as im:
        im.verify()
    size = (4 * 256 + 3 * GRID_GAP, GRID_HEADER + 2 * 256 + GRID_GAP)  # 4 tiles, worst + best
    with Image.open(tmp_path / "ov" / "all-polyp.png") as im:
        assert im.size == size and im.mode == "RGB"  # 64 px tiles scaled x4
    for row in (0, 1):  # third tile: the prediction, all polyp (white)
        assert (grid_tile(tmp_path / "ov" / "all-polyp.png", row, 2) == 255).all()
    with Image.open(tmp_path / "ov" / "no-polyp.png") as im:
        assert im.size == size  # 32 px tiles scaled x8
    for row in (0, 1):
        assert (grid_tile(tmp_path / "ov" / "no-polyp.png", row, 2) == 0).all()  # nothing predicted


def on_savefig(monkeypatch: pytest.MonkeyPatch, look: Callable[[Any], None]) -> None:
    """Call ``look(figure)`` on every matplotlib figure saved from now on, before it is saved."""
    from matplotlib.figure import Figure

    real_savefig = Figure.savefig

    def savefig(self: Figure, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        look(self)
        real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)


def record_legends(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The texts of the first panel's legend of every figure saved from now on (needs matplotlib)."""
    legends: list[list[str]] = []

    def look(fig: Any) -> None:
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])

    on_savefig(monkeypatch, look)
    return legends


def test_curves_with_matplotlib(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    legends = record_legends(monkeypatch)
    assert evaluate(runs, "--curves", str(tmp_path / "c.png")) == 0
    with Image.open(tmp_path / "c.png") as im:
        assert im.size[0] > 600
    assert legends == [["dice: all-polyp", "focal: no-polyp"]]  # each run named by its loss


def test_curves_plot_each_score_in_its_own_panel(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The numbers drawn are the run's metrics.csv, each column in the panel its title names."""
    pytest.importorskip("matplotlib")
    drawn: dict[str, list[float]] = {}

    def look(fig: Any) -> None:
        for ax in fig.axes:  # the first line of each panel: the run all-polyp (sorted first)
            drawn[ax.get_title()] = [float(y) for y in ax.lines[0].get_ydata()]

    on_savefig(monkeypatch, look)
    assert evaluate(runs, "--curves", str(tmp_path / "c.png")) == 0
    assert drawn == {
        "train loss": [0.9, 0.8],
        "validation mDice@0.5": [0.1, 0.2],
        "validation mIoU@0.5": [0.05, 0.1],
    }


def test_curves_without_matplotlib(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert evaluate(runs, "--curves", str(tmp_path / "c.png")) == 0  # the table still prints
    captured = capsys.readouterr()
    assert "pip install" in captured.err and "| focal |" in captured.out
    assert not (tmp_path / "c.png").exists()


def test_curves_that_cannot_be_written_stop_the_command(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a missing matplotlib is a warning: a failed write (a full disk) is an error, exit 2."""
    from unet_scratch import report
    from unet_scratch.errors import UserError

    def disk_full(fig: object, path: object, flag: str, **kwargs: object) -> None:
        raise UserError(f"cannot write {path} (No space left on device): free disk space")

    monkeypatch.setattr(report, "save_figure", disk_full)
    assert evaluate(runs, "--curves", str(tmp_path / "c.png")) == 2
    assert (
        capsys.readouterr().err
        == f"error: cannot write {tmp_path / 'c.png'} (No space left on device): free disk space\n"
    )


def test_bootstrap_interval_has_the_95_percent_width() -> None:
    # 400 values, half 0 and half 1: the mean's standard error is 0.5 / sqrt(400) = 0.025, so a 95 %
    # interval is 2 * 1.96 * 0.025 = 0.098 wide (a 90 % one would be 0.082)
    lo, hi = bootstrap_ci([0.0, 1.0] * 200)
    assert hi - lo == pytest.approx(0.098, abs=0.006) and lo < 0.5 < hi


def test_full_resolution_scores_use_the_threshold(runs: Path, tmp_path: Path) -> None:
    assert evaluate(runs, "--full-res", "--threshold", "0.7", "--json", str(tmp_path / "r.json")) == 0
    row = next(r for r in json.loads((tmp_path / "r.json").read_text())["runs"] if r["name"] == "all-polyp")
    assert row["full_res"]["dice"] == 0.0  # p = 0.62 < 0.7: nothing predicted at full size either


def test_roles_of_the_scored_frames() -> None:
    config = TrainConfig(train_frames="1-363", val_frames="364-428")
    assert frames_role(list(range(429, 613)), config) == "test"
    assert frames_role(list(range(364, 429)), config) == "validation"
    assert frames_role([500, 600], config) == "test" and frames_role([700], config) == "held-out"
    assert frames_role([363, 364], config) == "training"
    assert describe_role({"test"}, [429, 430])[0].startswith("test frames 429-430")
    # frames of which only some chose the epoch: still optimistic, and said so
    assert frames_role(list(range(400, 441)), config) == "partly-validation"
    for roles in ({"partly-validation"}, {"validation", "test"}, {"validation", "held-out"}):
        title, role = describe_role(roles, [400, 440])
        assert role == "partly-validation" and "some of them validation frames" in title
    assert describe_role({"validation"}, [400])[1] == "validation"
    assert describe_role(set(), [429]) == ("frames 429 (1 image): no run could be scored", "none")
    # an ensemble's frames: validation only if they chose every member's epoch
    assert members_role(["validation", "validation"]) == "validation"
    assert (
        members_role(["validation", "test"])
        == members_role(["test", "partly-validation"])
        == "partly-validation"
    )
    assert members_role(["validation", "training"]) == "training" and members_role(["test", "test"]) == "test"


def test_training_frames_are_flagged(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", str(runs), "--test-frames", "5-8", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert f"2 of the scored frames were training frames of {runs / 'all-polyp'}" in captured.err
    assert "training frames among them" in captured.out and "not test scores" in captured.out


def test_overlays_show_the_worst_then_the_best_frames(tmp_path: Path, synthetic_root: Path) -> None:
    # all-polyp scores Dice 2a / (a + n): the frame with the smallest polyp is its worst
    runs = tmp_path / "runs"
    make_run(runs, "all-polyp", "dice", 64, +0.5, synthetic_root)
    assert (
        evaluate(
            runs, "--overlays", str(tmp_path / "ov"), "--n-overlays", "1", "--json", str(tmp_path / "r.json")
        )
        == 0
    )
    per_image = json.loads((tmp_path / "r.json").read_text())["runs"][0]["per_image"]
    worst, best = (
        min(per_image, key=lambda n: per_image[n]["dice"]),
        max(per_image, key=lambda n: per_image[n]["dice"]),
    )
    _, masks = load_frames(synthetic_root, [int(worst), int(best)], 64)
    path = tmp_path / "ov" / "all-polyp.png"
    for row, mask in enumerate(masks):  # second tile: the ground truth, 4x upscaled
        assert np.array_equal(grid_tile(path, row, 1)[::4, ::4, 0] > 127, mask[0].numpy() == 1)
    with Image.open(path) as im:
        grid = np.asarray(im)
    step = 256 + GRID_GAP  # between the tiles: white (the black truth and prediction tiles kept apart)
    assert (grid[GRID_HEADER + 256 : GRID_HEADER + step] == 255).all()
    assert all((grid[:, c * step - GRID_GAP : c * step] == 255).all() for c in (1, 2, 3))
    overlay = grid_tile(path, 0, 3)  # worst frame: ground truth contour green, prediction yellow
    assert ((overlay == (0, 255, 0)).all(axis=2)).any() and ((overlay == (255, 220, 0)).all(axis=2)).any()
    assert (overlay[0, 0] == (255, 220, 0)).all()  # the prediction covers the frame: its outline is the edge


@pytest.mark.parametrize("size", [160, 64])  # tiles of 160 and 256 px
def test_overlay_titles_stay_inside_their_columns(tmp_path: Path, size: int) -> None:
    """Each column's title fits its tile (a shorter one where the longest would not): nothing
    dark in the header's gaps between the columns nor at the picture's right edge."""
    from unet_scratch.report import write_overlay_grid

    images = np.zeros((1, 3, size, size), np.uint8)
    masks = np.zeros((1, 1, size, size), np.uint8)
    width, _ = write_overlay_grid(images, masks, masks > 0, ["frame 1"], tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as im:
        header = np.asarray(im)[:GRID_HEADER]
    tile = (width + GRID_GAP) // 4 - GRID_GAP
    assert (header < 128).any()  # the titles are there
    for c in (1, 2, 3, 4):
        assert (header[:, c * (tile + GRID_GAP) - GRID_GAP - 2 : c * (tile + GRID_GAP)] == 255).all(), c


def test_overlays_draw_the_masks_that_were_scored(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # p = 0.62 everywhere: at --threshold 0.7 nothing is polyp, and the prediction tile must say so
    runs = tmp_path / "runs"
    make_run(runs, "all-polyp", "dice", 64, +0.5, synthetic_root)
    for threshold, covered in (("0.5", True), ("0.7", False)):
        out = tmp_path / f"ov{threshold}"
        assert evaluate(runs, "--overlays", str(out), "--n-overlays", "1", "--threshold", threshold) == 0
        prediction = grid_tile(out / "all-polyp.png", 0, 2)[..., 0] > 127  # third tile
        assert prediction.all() if covered else not prediction.any()
    # and the post-processing: at 0.5 the one region covers the frame, which no real step removes
    # (min-area takes F < 1), so here min-area removes every region, whatever its size
    from unet_scratch import postprocess

    monkeypatch.setattr(postprocess, "drop_small", lambda mask, _fraction: np.zeros_like(mask))
    out = tmp_path / "ov-pp"
    assert evaluate(runs, "--overlays", str(out), "--n-overlays", "1", "--postprocess", "min-area:0.5") == 0
    assert not (grid_tile(out / "all-polyp.png", 0, 2)[..., 0] > 127).any()


def test_curves_name_each_run_by_its_loss(tmp_path: Path) -> None:
    from unet_scratch.report import run_label

    for name, loss, want in (("tuned-f1", "focal", "focal: tuned-f1"), ("dice", "dice", "dice")):
        (tmp_path / name).mkdir()
        atomic_write_json({"loss": loss}, tmp_path / name / "config.json")
        assert run_label(tmp_path / name) == want
    (tmp_path / "bare").mkdir()
    assert run_label(tmp_path / "bare") == "bare"  # no config.json: the folder's name


def labelled_runs(root: Path, specs: list[tuple[str, str, int | None]]) -> list[Path]:
    """Run folders ``root/FOLDER/LOSS/tuned-f1-s47`` with config.json (no "epochs" where None)."""
    runs = []
    for folder, loss, epochs in specs:
        run = root / folder / loss / "tuned-f1-s47"
        run.mkdir(parents=True)
        atomic_write_json(
            {"loss": loss} | ({} if epochs is None else {"epochs": epochs}), run / "config.json"
        )
        runs.append(run)
    return runs


def test_curves_tell_apart_runs_that_share_a_label(tmp_path: Path) -> None:
    """The same recipe in two folders (20 and 40 epochs) gets the epoch count; two that still
    match, or whose counts do not differ, get their paths; a run whose label is its own keeps it."""
    from unet_scratch.report import run_labels

    specs = [("e20", "dice", 20), ("e40", "dice", 40), ("again", "dice", 40), ("e40", "jaccard", 40)]
    runs = labelled_runs(tmp_path, specs)
    assert run_labels(runs) == [
        "dice: tuned-f1-s47, 20 epochs",
        f"dice: tuned-f1-s47, 40 epochs ({runs[1]})",
        f"dice: tuned-f1-s47, 40 epochs ({runs[2]})",
        "jaccard: tuned-f1-s47",
    ]
    # the same epoch count (or none known) says nothing: the paths do; a folder given twice stays one
    runs = labelled_runs(
        tmp_path / "b", [("intel", "focal", 20), ("amd", "focal", 20), ("old", "combined", None)]
    )
    runs += labelled_runs(tmp_path / "c", [("new", "combined", 20)])
    respelled = runs[0].parent / ".." / "focal" / runs[0].name  # runs[0] again
    assert run_labels([*runs, respelled]) == [
        f"focal: tuned-f1-s47 ({runs[0]})",
        f"focal: tuned-f1-s47 ({runs[1]})",
        "combined: tuned-f1-s47",  # its epochs unknown: no "None epochs", and now apart
        "combined: tuned-f1-s47, 20 epochs",
        f"focal: tuned-f1-s47 ({respelled})",
    ]
    # a folder given twice is one run: nothing to tell apart
    assert (
        run_labels([runs[3], runs[3].parent / ".." / "combined" / runs[3].name])
        == ["combined: tuned-f1-s47"] * 2
    )


def test_curves_say_why_the_validation_panels_are_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from unet_scratch.report import plot_curves

    texts: list[list[str]] = []
    real_savefig = Figure.savefig
    monkeypatch.setattr(
        Figure,
        "savefig",
        lambda self, *a, **k: (
            texts.append([" ".join(t.get_text() for t in ax.texts) for ax in self.axes]),
            real_savefig(self, *a, **k),
        ),
    )
    run = tmp_path / "r"
    run.mkdir()
    for header, row in (
        ("epoch,train_loss,lr", "1,0.5,0.001"),
        ("epoch,train_loss,val_dice,val_iou", "1,0.5,0.4,0.3"),
    ):
        (run / "metrics.csv").write_text(f"{header}\n{row}\n")
        plot_curves([run], tmp_path / "c.png")
    no_val, val = texts
    assert no_val[0] == "" and all("--val-frames" in t for t in no_val[1:])  # the loss panel has its line
    assert val == ["", "", ""]


def test_curves_legend_names_the_runs_drawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The figure's legend holds run_labels() of the runs that have metrics: a run not started
    draws nothing and does not lengthen the others' labels."""
    pytest.importorskip("matplotlib")
    from unet_scratch.report import plot_curves

    runs = labelled_runs(tmp_path, [("e20", "dice", 20), ("e40", "dice", 40), ("e40", "jaccard", 40)])
    for run in runs[::2]:  # the 40-epoch dice run has not started
        (run / "metrics.csv").write_text("epoch,train_loss,val_dice,val_iou\n1,0.5,0.4,0.3\n")
    legends = record_legends(monkeypatch)
    plot_curves(runs, tmp_path / "c.png")
    assert legends == [["dice: tuned-f1-s47", "jaccard: tuned-f1-s47"]]


@pytest.mark.parametrize("full_res", [False, True])
def test_every_row_of_the_table_has_a_cell_per_column(full_res: bool) -> None:
    """A run that was not scored fills its row with "—", so the markdown table stays one table."""
    from unet_scratch.report import results_table

    scored = {"loss": "dice", "name": "a", "dice": 0.5, "jaccard": 0.4, "dice_ci95": [0.4, 0.6],
              "soft_dice": 0.5, "soft_jaccard": 0.4, "pooled_dice": 0.6, "best_epoch": 3,
              "train_seconds": 61.0, "full_res": {"dice": 0.5, "jaccard": 0.4}}  # fmt: skip
    failed = {"loss": "focal", "name": "b", "error": "no best.pt"}
    lines = results_table([scored, failed], full_res=full_res).splitlines()
    assert len({line.count("|") for line in lines}) == 1, lines
    assert lines[3].startswith("| focal | b | no best.pt | — |") and lines[3].endswith("| — |")


def test_results_table_tells_apart_runs_that_share_a_name(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same recipe in four folders: the table row, the JSON and the "best by" line name
    each run by its epoch count where the counts differ, and by its path where two still match,
    next to its own scores (a run that could not be scored too); a run whose name is its own
    keeps it; a folder given twice, however spelled, is scored once; no overlay PNG is written
    over another."""
    e20 = make_run(tmp_path / "e20" / "dice", "tuned-f1-s47", "dice", 32, +0.5, synthetic_root)
    e40 = make_run(tmp_path / "e40" / "dice", "tuned-f1-s47", "dice", 64, +0.5, synthetic_root, epochs=40)
    again = make_run(tmp_path / "again" / "dice", "tuned-f1-s47", "dice", 96, +0.5, synthetic_root, epochs=40)
    other = make_run(
        tmp_path / "e40" / "jaccard", "tuned-f1-s47", "jaccard", 64, +0.5, synthetic_root, epochs=40
    )
    broken = make_run(
        tmp_path / "broken" / "dice", "tuned-f1-s47", "dice", 32, 0.5, synthetic_root, epochs=40
    )
    (broken / "best.pt").unlink()
    (tmp_path / "link").symlink_to(e40, target_is_directory=True)
    twice = [e40.parent / ".." / "dice" / e40.name, tmp_path / "link"]  # e40 spelled two other ways
    argv = [*map(str, (e20, e40, again, other, broken, *twice)), "--test-frames", "9-12", "--device", "cpu"]
    assert main([*argv, "--json", str(tmp_path / "r.json"), "--overlays", str(tmp_path / "ov")]) == 0
    out = capsys.readouterr().out
    names = {
        e20: "tuned-f1-s47, 20 epochs",
        e40: f"tuned-f1-s47, 40 epochs ({e40})",
        again: f"tuned-f1-s47, 40 epochs ({again})",
        other: "tuned-f1-s47",
        broken: f"tuned-f1-s47, 40 epochs ({broken})",
    }
    rows = {r["path"]: r for r in json.loads((tmp_path / "r.json").read_text())["runs"]}
    assert sorted(rows) == sorted(map(str, names)) and rows[str(broken)]["error"].startswith("no best.pt")
    assert all(rows[str(d)]["name"] == n for d, n in names.items())
    size = {e20: 32, e40: 64, again: 96, other: 64}
    dice = {d: f"{np.mean(expected_scores(synthetic_root, size[d], 0.5)['dice']):.4f}" for d in size}
    assert len({dice[e20], dice[e40], dice[again]}) == 3  # a row given another run's name shows
    for run_dir, name in names.items():  # each name on the row that holds that run's own scores
        cells = [c.strip() for c in next(x for x in out.splitlines() if f"| {name} |" in x).split("|")]
        assert cells[1] == run_dir.parent.name and cells[3] == dice.get(
            run_dir, "no best.pt (not trained past epoch 1?)"
        )
    best = max(size, key=lambda d: float(dice[d]))
    assert f"Dice: {best.parent.name}: {names[best]}, {dice[best]}\n" in out.split("best by")[1]
    # one PNG per scored run, named by loss where two runs share a folder name
    stems = {e20: "dice-tuned-f1-s47", e40: "dice-tuned-f1-s47-2", again: "dice-tuned-f1-s47-3"}
    want = {str(d): str(tmp_path / "ov" / f"{stems.get(d, 'jaccard-tuned-f1-s47')}.png") for d in size}
    assert {p: r["overlay"] for p, r in rows.items() if "overlay" in r} == want
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == sorted(Path(f).name for f in want.values())
    tiles = {d: (Image.open(want[str(d)]).size[0] + GRID_GAP) // 4 - GRID_GAP for d in size}
    assert (tiles[again], tiles[e40], tiles[e20]) == (192, 256, 256)  # 256 px from 32 and 64, 192 from 96


def test_a_run_linked_twice_under_runs_is_scored_once(tmp_path: Path, synthetic_root: Path) -> None:
    """--runs ROOT where ROOT/latest links to ROOT/dice: one row, and --ensemble does not see
    the run twice (which it would refuse)."""
    runs = tmp_path / "runs"
    make_run(runs, "dice", "dice", 32, 0.5, synthetic_root)
    (runs / "latest").symlink_to(runs / "dice", target_is_directory=True)
    for flags in ([], ["--ensemble"]):
        assert evaluate(runs, *flags, "--json", str(tmp_path / "r.json")) == 0
        assert [r["path"] for r in json.loads((tmp_path / "r.json").read_text())["runs"]] == [
            str(runs / "dice")
        ]


def test_ensemble_scores_the_mean_of_the_members_probabilities(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--ensemble: one row per loss, scored on the mean of its runs' probabilities, each run
    with its own temperature (closed forms again: every member is constant)."""
    runs = tmp_path / "runs"
    make_run(runs, "dice-a", "dice", 32, 3.0, synthetic_root)
    make_run(runs, "dice-b", "dice", 32, -1.0, synthetic_root)
    make_run(runs, "focal-a", "focal", 32, 0.25, synthetic_root)
    make_run(runs, "focal-b", "focal", 32, -0.5, synthetic_root)
    assert evaluate(runs, "--ensemble", "--json", str(tmp_path / "r.json")) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["loss"] for r in report["runs"]] == ["dice", "focal"]  # one row per loss

    def sigmoid(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    t = FOCAL_TEMPERATURE
    # the mean of the probabilities (0.611: every pixel polyp), not of the logits (sigmoid(1) = 0.731);
    # the focal members each tempered before the mean (0.426), not the mean tempered (0.391)
    means = {"dice": (sigmoid(3.0) + sigmoid(-1.0)) / 2, "focal": (sigmoid(t * 0.25) + sigmoid(t * -0.5)) / 2}
    for row in report["runs"]:
        p = means[row["loss"]]
        want = expected_scores(synthetic_root, 32, math.log(p / (1 - p)))
        assert row["name"] == f"ensemble of 2: runs/{row['loss']}-a, runs/{row['loss']}-b"
        assert [row["per_image"][str(n)]["dice"] for n in FRAMES] == pytest.approx(want["dice"], abs=1e-9)
        assert row["soft_dice"] == pytest.approx(np.mean(want["soft_dice"]), rel=1e-6)
        assert row["soft_jaccard"] == pytest.approx(np.mean(want["soft_jaccard"]), rel=1e-6)
        assert row["pooled_dice"] == pytest.approx(want["pooled_dice"][0], abs=1e-9)
        assert row["temperature"] == ([1.0, 1.0] if row["loss"] == "dice" else [t, t])
        assert row["best_epoch"] == [2, 2] and row["train_seconds"] == 60.0  # both runs' training
        cells = [c.strip() for c in next(x for x in lines if row["name"] in x).strip("|").split("|")]
        assert cells[-2:] == ["2, 2", "1:00"]
    assert min(expected_scores(synthetic_root, 32, 1.0)["dice"]) > 0  # the dice masks are not empty
    # one overlay picture per ensemble, named after its loss, not after its first run
    assert evaluate(runs, "--ensemble", "--overlays", str(tmp_path / "ov"), "--n-overlays", "1") == 0
    assert sorted(f.name for f in (tmp_path / "ov").iterdir()) == ["dice-ensemble.png", "focal-ensemble.png"]

    # --temperature applies to the mean, each member keeping its own before it (3.7 for focal):
    # the mean's logit times 2, as for one run, so no mask at 0.5 moves
    focal = [str(runs / "focal-a"), str(runs / "focal-b")]
    args = ["--test-frames", "9-12", "--device", "cpu", "--ensemble", "--temperature", "2"]
    assert main([*focal, *args, "--json", str(tmp_path / "t.json")]) == 0
    (row,) = json.loads((tmp_path / "t.json").read_text())["runs"]
    p = means["focal"]
    want = expected_scores(synthetic_root, 32, 2 * math.log(p / (1 - p)))
    assert row["temperature"] == [t, t]  # the members'; the report's own "temperature" is 2
    assert row["soft_dice"] == pytest.approx(np.mean(want["soft_dice"]), rel=1e-6)


def test_every_member_of_an_ensemble_is_checked_not_the_first_only(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The frames' role, the training-frame warning and the data check look at each member: a
    second member that trained on the scored frames makes them training frames, named; one
    trained on other data is named in the row's error."""
    runs = tmp_path / "runs"
    make_run(runs, "dice-a", "dice", 32, 0.5, synthetic_root)  # trained on 1-6: 9-12 held out
    make_run(runs, "dice-b", "dice", 32, 0.5, synthetic_root, train_frames="1-10")  # 9 and 10 its own
    assert evaluate(runs, "--ensemble", "--json", str(tmp_path / "r.json")) == 0
    (row,) = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert row["frames_role"] == "training"
    assert row["warning"] == f"2 of the scored frames were training frames of {runs / 'dice-b'}"
    capsys.readouterr()
    other = write_dataset(tmp_path / "other", range(1, 13), seed=5)
    make_run(runs, "dice-c", "dice", 32, 0.5, other)  # another dataset, same frame numbers
    shutil.rmtree(runs / "dice-b")  # out of the way: a, then c
    report = str(tmp_path / "r.json")
    assert evaluate(runs, "--data", str(synthetic_root), "--ensemble", "--json", report) == 2
    (row,) = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert row["error"].startswith("runs/dice-c: trained on"), row["error"]


def test_an_ensemble_of_runs_that_do_not_fit_is_refused(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    make_run(runs, "a", "dice", 32, 0.5, synthetic_root)
    make_run(runs, "b", "dice", 64, 0.5, synthetic_root)
    assert evaluate(runs, "--ensemble") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "runs/b was trained at 64x64" in err and "an ensemble needs runs of one input size" in err
    # one run given twice (however spelled) would weigh double in the mean: predict.py refuses it
    from unet_scratch.predict import main as predict_main

    image = synthetic_root / "Original" / "9.tif"
    twice = ["--run", str(runs / "a"), "--run", f"{runs}/b/../a/", str(image), "--out", str(tmp_path / "o")]
    assert predict_main(twice) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and f"{runs}/b/../a/ is given twice" in err
    assert not (tmp_path / "o").exists()
    # a folder that is not there, given twice or as a symlink loop: it does not exist, said first
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for bad in (tmp_path / "nope", tmp_path / "loop"):
        argv = [
            "--run",
            str(runs / "a"),
            "--run",
            str(bad),
            "--run",
            f"{bad}/",
            str(image),
            "--out",
            str(tmp_path / "o"),
        ]
        assert predict_main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and f"run folder {bad} does not exist" in err
        assert err.endswith(f"check the path; runs in {tmp_path}: {runs / 'a'}, {runs / 'b'}\n"), err
    assert not (tmp_path / "o").exists()
    assert main([str(runs / "a" / "best.pt"), "--test-frames", "9-12"]) == 2  # a checkpoint: its folder
    assert capsys.readouterr().err == f"error: {runs / 'a' / 'best.pt'} is a file: give the run's folder " \
        f"({runs / 'a'}), not its checkpoint\n"
    assert main(["--runs", str(runs / "a" / "best.pt"), "--test-frames", "9-12"]) == 2  # not "does not exist"
    assert capsys.readouterr().err == f"error: {runs / 'a' / 'best.pt'} is a file: give the run's folder " \
        f"({runs / 'a'}), not its checkpoint\n"
    lone = tmp_path / "handed on.pt"  # a checkpoint beside no run: how to make it one, which works
    lone.write_bytes((runs / "a" / "best.pt").read_bytes())
    assert main([str(lone), "--test-frames", "9-12"]) == 2
    assert capsys.readouterr().err == f"error: {lone} is a checkpoint, not a run folder: put it in a " \
        f"folder of its own as best.pt (mkdir NAME && cp '{lone}' NAME/best.pt) and give NAME, " \
        "with --data DIR if its data lies elsewhere here\n"
    (tmp_path / "NAME").mkdir()
    shutil.copy(lone, tmp_path / "NAME" / "best.pt")
    assert main([str(tmp_path / "NAME"), "--data", str(synthetic_root), "--test-frames", "9-12"]) == 0
    assert "| NAME |" in capsys.readouterr().out
    (tmp_path / "model.onnx").write_bytes(b"")  # a file beside no run: no run folder to offer
    assert main([str(tmp_path / "model.onnx"), "--test-frames", "9-12"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'model.onnx'} is a file, not a run folder: " \
        "give a folder train.py wrote (with best.pt)\n"
    assert main([str(runs / "c"), "--test-frames", "9-12"]) == 2  # evaluate.py names the runs too
    assert capsys.readouterr().err == f"error: run folder {runs / 'c'} does not exist: check the path; " \
        f"runs in {runs}: {runs / 'a'}, {runs / 'b'}\n"
    # --runs names a folder of runs: a misspelt one names the folders of runs nearby, not runs
    assert main(["--runs", str(tmp_path / "rns"), "--test-frames", "9-12"]) == 2
    assert capsys.readouterr().err == f"error: --runs {tmp_path / 'rns'} does not exist: check the " \
        f"path; folders of runs in {tmp_path}: {tmp_path}, {runs}\n"  # NAME is a run in tmp_path
    assert main(["--runs", str(tmp_path / "NAME" / "x"), "--test-frames", "9-12"]) == 2  # none beside it
    assert capsys.readouterr().err == f"error: --runs {tmp_path / 'NAME' / 'x'} does not exist: " \
        "train first (python train.py) or pass --runs DIR\n"
    (runs / "b" / "best.pt").unlink()  # a member that cannot be scored: the loss's row says which
    assert evaluate(runs, "--ensemble") == 2
    row = next(line for line in capsys.readouterr().out.splitlines() if "ensemble of 2" in line)
    assert "runs/b: no best.pt" in row


def test_best_by_line_names_the_run_as_the_curves_legend_does(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run whose folder is named after its loss is plain "dice"; two such folders trained for
    20 and 40 epochs are "dice, 20 epochs" and "dice, 40 epochs", as run_labels() names them."""
    from unet_scratch.report import run_labels

    e20 = make_run(tmp_path / "runs", "dice", "dice", 32, +0.5, synthetic_root)
    e40 = make_run(tmp_path / "runs-e40", "dice", "dice", 64, +0.5, synthetic_root, epochs=40)
    dice = {
        d: f"{np.mean(expected_scores(synthetic_root, n, 0.5)['dice']):.4f}"
        for d, n in ((e20, 32), (e40, 64))
    }
    assert dice[e20] != dice[e40]
    for given in ([e20], [e20, e40]):
        assert main([*map(str, given), "--test-frames", "9-12", "--device", "cpu"]) == 0
        line = capsys.readouterr().out.split("best by held-out Dice: ")[1].splitlines()[0]
        best = max(given, key=lambda d: float(dice[d]))
        assert line == f"{run_labels(given)[given.index(best)]}, {dice[best]}"
        assert line.startswith("dice, 40 epochs, " if len(given) == 2 else "dice, ")


def test_rows_sort_by_loss_then_by_the_numbers_in_their_names() -> None:
    """The results table's order: the losses in the project's order (an unknown loss last), and
    within a loss the names with their numbers read as numbers."""
    names = [
        ("lovasz", "a"),
        ("abc", "z"),
        ("dice", "b-s47"),
        ("dice", "2x"),
        ("dice", ""),
        ("dice", "a1"),
        ("combined", "run"),
        ("dice", "tuned-f1-s47, 100 epochs"),
        ("dice", "tuned-f10-s47"),
        ("dice", "tuned-f1-s47, 20 epochs"),
        ("dice", "tuned-f2-s47"),
        ("dice", "tuned-f" + "1" * 5000 + "-s47"),  # more digits than int() converts
        ("jaccard", "tuned-f1-s47"),
    ]
    rows = sort_runs([{"loss": loss, "name": name} for loss, name in names])
    assert [(r["loss"], r["name"]) for r in rows] == [
        ("dice", ""),
        ("dice", "2x"),  # digits first: "" < "a" as the leading text
        ("dice", "a1"),
        ("dice", "b-s47"),
        ("dice", "tuned-f1-s47, 20 epochs"),
        ("dice", "tuned-f1-s47, 100 epochs"),
        ("dice", "tuned-f2-s47"),
        ("dice", "tuned-f10-s47"),
        ("dice", "tuned-f" + "1" * 5000 + "-s47"),
        ("jaccard", "tuned-f1-s47"),
        ("combined", "run"),
        ("abc", "z"),  # losses the project does not know: last, by name
        ("lovasz", "a"),
    ]
    assert natural_key("x7y") == natural_key("x007y") < natural_key("x10y") < natural_key("x010z")
    assert natural_key("x0") == natural_key("x00") < natural_key("x1")
