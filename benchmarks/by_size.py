"""Dice by polyp size: which polyps a model finds, from ``evaluate.py --json`` per-image scores.

    python evaluate.py --runs RUNS --test-frames 364-428 --json scores.json
    python benchmarks/by_size.py scores.json [more.json ...] [--groups 3] [--data DIR]

The scored frames are sorted by the polyp's area (the share of the frame its mask covers, read at
full size) and cut into ``--groups`` groups of (nearly) equal count, smallest polyps first; the
table gives each group's area range and each run's mean per-image Dice in it. Runs of several
JSON files (e.g. two folders of runs) must have been scored on the same frames.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet_scratch.data import find_pairs, read_mask  # noqa: E402


def polyp_areas(root: Path, frames: list[int]) -> dict[int, float]:
    """The share of each frame its ground-truth mask covers (mask > 127, full size)."""
    pairs = find_pairs(root)
    return {n: float((read_mask(pairs[n][1]) > 127).mean()) for n in frames}


def size_groups(areas: dict[int, float], groups: int) -> list[list[int]]:
    """Frames sorted by area (ties by frame number) and cut into ``groups`` near-equal parts."""
    order = sorted(areas, key=lambda n: (areas[n], n))
    return [list(part) for part in np.array_split(order, groups)]


def dice_by_size(
    per_image: dict[str, dict[int, float]], areas: dict[int, float], groups: int
) -> list[tuple[float, float, int, dict[str, float]]]:
    """``(smallest area, largest area, frames, {run: mean Dice})`` per group, smallest first."""
    rows = []
    for part in size_groups(areas, groups):
        means = {run: float(np.mean([scores[n] for n in part])) for run, scores in per_image.items()}
        rows.append((areas[part[0]], areas[part[-1]], len(part), means))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", nargs="+", help="files written by evaluate.py --json")
    p.add_argument("--groups", type=int, default=3, help="size groups of equal count (default 3)")
    p.add_argument("--data", help="dataset folder (default: the one the JSON names)")
    args = p.parse_args(argv)
    per_image: dict[str, dict[int, float]] = {}
    data = args.data
    for path in args.json:
        report = json.loads(Path(path).read_text())
        data = data or report["data"]
        for run in report["runs"]:
            if "per_image" in run:
                label = f"{run['loss']} ({run['name']})"
                per_image[label] = {int(n): s["dice"] for n, s in run["per_image"].items()}
    if not per_image:
        print("no scored runs in these files", file=sys.stderr)
        return 2
    frames = sorted(next(iter(per_image.values())))
    if any(sorted(scores) != frames for scores in per_image.values()):
        print("the runs were scored on different frames: score them on the same --test-frames",
              file=sys.stderr)  # fmt: skip
        return 2
    rows = dice_by_size(per_image, polyp_areas(Path(data), frames), args.groups)
    print(f"mean per-image Dice by polyp area ({len(frames)} frames of {data}, {args.groups} groups)\n")
    print("| polyp area (% of frame) | frames | " + " | ".join(per_image) + " |")
    print("|---|---|" + "---|" * len(per_image))
    for lo, hi, n, means in rows:
        cells = " | ".join(f"{means[run]:.3f}" for run in per_image)
        print(f"| {100 * lo:.1f}–{100 * hi:.1f} | {n} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
