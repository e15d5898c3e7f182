"""benchmarks/by_size.py: frames grouped by their own masks' areas, each group's mean Dice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from .scripts import load_script


def load():  # noqa: ANN201
    return load_script("benchmarks/by_size.py")


def test_dice_by_polyp_size_groups_frames_by_their_masks(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = list(range(1, 13))
    areas = {
        n: float((tifffile.imread(synthetic_root / "Ground Truth" / f"{n}.tif") > 127).mean()) for n in frames
    }
    order = sorted(frames, key=lambda n: areas[n])
    assert len({areas[n] for n in frames}) == 12  # distinct areas: the order is well defined
    # a run whose Dice is its frame's rank by area (0 for the smallest polyp ... 11 for the largest),
    # and one whose Dice is the frame number: group means are then known without the script
    rank = {n: float(k) for k, n in enumerate(order)}
    report = {
        "data": str(synthetic_root),
        "runs": [
            {"name": "a", "loss": "dice", "per_image": {str(n): {"dice": rank[n]} for n in frames}},
            {"name": "b", "loss": "focal", "per_image": {str(n): {"dice": float(n)} for n in frames}},
            {"name": "c", "loss": "jaccard", "error": "no best.pt"},  # unscored: left out
        ],
    }
    (tmp_path / "r.json").write_text(json.dumps(report))
    by_size = load()
    parts = by_size.size_groups(by_size.polyp_areas(synthetic_root, frames), 3)
    rows = by_size.group_means({"a": {n: rank[n] for n in frames}, "b": {n: float(n) for n in frames}}, parts)
    assert [len(part) for part in parts] == [4, 4, 4]
    assert [r["a"] for r in rows] == [1.5, 5.5, 9.5]  # ranks 0-3, 4-7, 8-11: smallest polyps first
    for got, means, part in zip(parts, rows, (order[:4], order[4:8], order[8:])):
        assert (areas[got[0]], areas[got[-1]]) == pytest.approx((areas[part[0]], areas[part[-1]]))
        assert means["b"] == pytest.approx(np.mean(part))

    assert by_size.main([str(tmp_path / "r.json"), "--groups", "3"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[0] == "| polyp area (% of frame) | frames | mean polyp area | dice (a) | focal (b) |"
    assert [line.split("|")[4].strip() for line in lines[1:]] == ["1.500", "5.500", "9.500"]


def test_groups_by_frame_ranges_with_pooled_precision_and_recall(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # per-image pixel counts chosen so that each range's pooled rates are known by hand:
    # frames 1-2: tp 3+1, fp 1+3, fn 0+4 -> precision 4/8, recall 4/8, area 8/8;
    # frames 3-5: tp 6 each, fp 0, fn 2 each -> precision 1, recall 18/24, area 18/24
    counts = {1: (3, 1, 0), 2: (1, 3, 4), 3: (6, 0, 2), 4: (6, 0, 2), 5: (6, 0, 2)}
    run = {
        "name": "a",
        "loss": "dice",
        "per_image": {str(n): {"dice": n / 10, "tp": t, "fp": p, "fn": f} for n, (t, p, f) in counts.items()},
    }
    (tmp_path / "r.json").write_text(json.dumps({"data": str(synthetic_root), "runs": [run]}))
    by_size = load()
    assert by_size.main([str(tmp_path / "r.json"), "--ranges", "1-2,3-5"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[0] == "| frame range | frames | mean polyp area | dice (a) |"
    dice_rows, rate_rows = lines[1:3], lines[4:6]
    assert [row.split("|")[1].strip() for row in dice_rows] == ["1-2", "3-5"]
    assert [row.split("|")[4].strip() for row in dice_rows] == ["0.150", "0.400"]  # (.1+.2)/2, (.3+.4+.5)/3
    assert [row.split("|")[2].strip() for row in rate_rows] == ["0.50 / 0.50 / 1.00", "1.00 / 0.75 / 0.75"]
    for bad in ("1-2,7-9", "1-x", "1-3,3-5"):  # no scored frame in 7-9; malformed; 3 in two groups
        assert by_size.main([str(tmp_path / "r.json"), "--ranges", bad]) == 2
        assert capsys.readouterr().err.startswith("--ranges: ")
    # a second file with the same run name and no pixel counts: its own column, and its rates
    # are not borrowed from the first run's
    old = {"name": "a", "loss": "dice", "per_image": {str(n): {"dice": 0.0} for n in counts}}
    (tmp_path / "old.json").write_text(json.dumps({"data": str(synthetic_root), "runs": [old]}))
    assert by_size.main([str(tmp_path / "r.json"), str(tmp_path / "old.json"), "--ranges", "1-2,3-5"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[0].count("dice (a)") == 2 and lines[3].count("dice (a)") == 1
    assert "no pixel counts" in out and "old.json" in out.splitlines()[-1]


def test_pixel_rates_of_an_empty_group_are_nan() -> None:
    rates = load().pixel_rates({1: (0, 0, 0)}, [1])
    assert all(np.isnan(r) for r in rates)


def test_runs_scored_on_other_frames_are_refused(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, frames in (("a", [1, 2]), ("b", [1, 3])):
        run = {"name": name, "loss": "dice", "per_image": {str(n): {"dice": 0.5} for n in frames}}
        (tmp_path / f"{name}.json").write_text(json.dumps({"data": str(synthetic_root), "runs": [run]}))
    assert load().main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "different frames" in capsys.readouterr().err
