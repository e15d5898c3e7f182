"""evaluate.py: table numbers, missing runs, JSON, overlays, curves, input size from the checkpoint."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from unet_scratch.checkpoint import atomic_torch_save, atomic_write_json
from unet_scratch.config import TrainConfig
from unet_scratch.data import load_frames
from unet_scratch.engine import build_model, predict
from unet_scratch.evaluate import bootstrap_ci, main
from unet_scratch.metrics import SegmentationMeter

FRAMES = "9-12"


def make_run(runs: Path, name: str, loss: str, size: int, seed: int) -> Path:
    """A run folder as train.py leaves it, with an untrained model (fast, and just as scorable)."""
    run = runs / name
    run.mkdir(parents=True)
    config = TrainConfig(loss=loss, input_size=size, seed=seed, train_frames="1-6", val_frames="7-8")
    model = build_model(config)
    history = [
        {"epoch": 1, "train_loss": 0.9, "val_dice": 0.1, "val_iou": 0.05, "elapsed_seconds": 12.0},
        {"epoch": 2, "train_loss": 0.8, "val_dice": 0.2, "val_iou": 0.1, "elapsed_seconds": 30.0},
    ]
    state = {
        "format": 1,
        "model": model.state_dict(),
        "config": config.to_dict(),
        "epoch": 2,
        "history": history,
    }
    atomic_torch_save(state, run / "best.pt")
    atomic_write_json(config.to_dict(), run / "config.json")
    (run / "metrics.csv").write_text(
        "epoch,train_loss,val_dice,val_iou,elapsed_seconds\n1,0.9,0.1,0.05,12.0\n2,0.8,0.2,0.1,30.0\n"
    )
    return run


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    make_run(runs, "focal-run", "focal", 64, seed=1)
    make_run(runs, "dice-run", "dice", 32, seed=2)
    (runs / "crashed").mkdir()
    atomic_write_json({"loss": "jaccard"}, runs / "crashed" / "config.json")
    return runs


def evaluate(runs: Path, root: Path, *extra: str) -> int:
    return main(["--runs", str(runs), "--data", str(root), "--test-frames", FRAMES, *extra])


def test_table_matches_metrics_and_reports_every_run(
    runs: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate(runs, synthetic_root, "--json", str(tmp_path / "r.json")) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["dice", "jaccard", "focal"]  # order
    assert "crashed" in lines[2] and "no best.pt" in lines[2]  # reported, not dropped

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["test_frames"] == FRAMES
    by_name = {r["name"]: r for r in report["runs"]}
    for name, size in (("focal-run", 64), ("dice-run", 32)):
        ckpt = torch.load(runs / name / "best.pt", weights_only=True)
        model = build_model(TrainConfig.from_dict(ckpt["config"]))
        model.load_state_dict(ckpt["model"])
        images, masks = load_frames(synthetic_root, [9, 10, 11, 12], size)
        meter = SegmentationMeter()
        meter.update(predict(model, images, None), masks)
        s, row = meter.summary(), by_name[name]
        assert row["input_size"] == size  # the checkpoint's size, not a default
        assert row["dice"] == pytest.approx(s["dice"], abs=0.02)  # bf16 inference vs fp32 here
        assert row["soft_dice"] == pytest.approx(s["soft_dice"], abs=0.02)
        assert sorted(row["per_image"]) == ["10", "11", "12", "9"]
        per_image = [row["per_image"][str(n)]["dice"] for n in (9, 10, 11, 12)]
        assert row["dice"] == pytest.approx(sum(per_image) / 4)
        assert row["dice_ci95"] == pytest.approx(list(bootstrap_ci(per_image)))
        assert row["best_epoch"] == 2 and row["train_seconds"] == 30.0
        table_row = next(line for line in lines if f"| {name} |" in line)
        assert f"{row['dice']:.4f}" in table_row and f"{row['pooled_dice']:.4f}" in table_row
        assert table_row.endswith("| 2 | 0:30 |")  # best epoch, training time
    assert "best by test Dice" in out


def test_bootstrap_interval() -> None:
    lo, hi = bootstrap_ci([0.5] * 10)
    assert lo == hi == 0.5
    lo, hi = bootstrap_ci([0.0, 1.0] * 50)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.2, abs=0.05)  # ~ 2 * 1.96 * 0.05


def test_overlays_are_valid_pngs(runs: Path, synthetic_root: Path, tmp_path: Path) -> None:
    assert evaluate(runs, synthetic_root, "--overlays", str(tmp_path / "ov"), "--n-overlays", "1") == 0
    with Image.open(tmp_path / "ov" / "focal-run.png") as im:
        im.verify()
    with Image.open(tmp_path / "ov" / "focal-run.png") as im:
        assert im.size == (4 * 256, 2 * 256) and im.mode == "RGB"  # 64 px tiles scaled x4, worst + best
    with Image.open(tmp_path / "ov" / "dice-run.png") as im:
        assert im.size == (4 * 256, 2 * 256)  # 32 px tiles scaled x8


def test_curves_with_matplotlib(runs: Path, synthetic_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert evaluate(runs, synthetic_root, "--curves", str(tmp_path / "c.png")) == 0
    with Image.open(tmp_path / "c.png") as im:
        assert im.size[0] > 600


def test_curves_without_matplotlib(
    runs: Path,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert evaluate(runs, synthetic_root, "--curves", str(tmp_path / "c.png")) == 0  # the table still prints
    captured = capsys.readouterr()
    assert "pip install" in captured.err and "| focal |" in captured.out
    assert not (tmp_path / "c.png").exists()


def test_no_runs_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", str(tmp_path / "none")]) == 2
    assert "train first" in capsys.readouterr().err


def test_threshold_option(runs: Path, synthetic_root: Path, tmp_path: Path) -> None:
    # threshold 0: every pixel is called polyp, so Dice = 2|y| / (|y| + S^2) per image
    assert evaluate(runs, synthetic_root, "--threshold", "0", "--json", str(tmp_path / "r.json")) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["threshold"] == 0.0
    row = next(r for r in report["runs"] if r["name"] == "dice-run")
    _, masks = load_frames(synthetic_root, [9, 10, 11, 12], 32)
    area = masks.flatten(1).sum(1).double()
    expected = (2 * area / (area + 32 * 32)).tolist()
    got = [row["per_image"][str(n)]["dice"] for n in (9, 10, 11, 12)]
    assert got == pytest.approx(expected)
