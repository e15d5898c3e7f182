"""Dice by polyp size or by video: which polyps a model finds, from ``evaluate.py --json``.

    python evaluate.py --runs RUNS --test-frames 364-428 --json scores.json
    python benchmarks/by_size.py scores.json [more.json ...] [--groups 3] [--data DIR]
    python benchmarks/by_size.py scores.json --ranges 364-383,384-408,409-428

The scored frames are sorted by the polyp's area (the share of the frame its mask covers, read at
full size) and cut into ``--groups`` groups of (nearly) equal count, smallest polyps first; or,
with ``--ranges``, grouped by the given frame ranges (e.g. the video sequences of the dataset's
README). The table gives each group's area range (or frame range), mean polyp area and each
run's mean per-image Dice in it; a second table the group's pixel precision and recall (true
positives over predicted, and over polyp, pixels, pooled over its frames) and the predicted
polyp area over the true one, where the JSON holds the per-image pixel counts. Runs of several
JSON files (e.g. two folders of runs) must have been scored on the same frames.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet_scratch.data import find_pairs, parse_frames, read_mask  # noqa: E402
from unet_scratch.errors import UserError  # noqa: E402


def polyp_areas(root: Path, frames: list[int]) -> dict[int, float]:
    """The share of each frame its ground-truth mask covers (mask > 127, full size)."""
    pairs = find_pairs(root)
    return {n: float((read_mask(pairs[n][1]) > 127).mean()) for n in frames}


def size_groups(areas: dict[int, float], groups: int) -> list[list[int]]:
    """Frames sorted by area (ties by frame number) and cut into ``groups`` near-equal parts."""
    order = sorted(areas, key=lambda n: (areas[n], n))
    return [list(part) for part in np.array_split(order, groups)]


def group_means(per_image: dict[str, dict[int, float]], parts: list[list[int]]) -> list[dict[str, float]]:
    """Each group's ``{run: mean per-image Dice}``, in the order of ``parts``."""
    return [
        {run: float(np.mean([scores[n] for n in part])) for run, scores in per_image.items()}
        for part in parts
    ]


def pixel_rates(counts: dict[int, tuple[int, int, int]], part: list[int]) -> tuple[float, float, float]:
    """Pooled over the frames ``part``: precision tp / (tp + fp), recall tp / (tp + fn), and the
    predicted over the true polyp area (tp + fp) / (tp + fn); ``counts[n] = (tp, fp, fn)``. A rate
    whose denominator is 0 (nothing predicted, or no polyp pixel) is nan."""
    tp, fp, fn = (sum(counts[n][k] for n in part) for k in range(3))
    ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
    return ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(tp + fp, tp + fn)


def frame_ranges(spec: str, scored: list[int]) -> tuple[list[str], list[list[int]]]:
    """``"364-383,384-408"`` -> the labels and the scored frames of each range; ValueError for a
    range that is malformed, holds no scored frame, or overlaps another."""
    labels, parts, seen = [r.strip() for r in spec.split(",")], [], set()
    for label in labels:
        try:
            frames = parse_frames(label)
        except UserError:
            raise ValueError(f"bad range {label!r}: use e.g. 364-383,384-408") from None
        part = [n for n in frames if n in scored]
        if not part:
            raise ValueError(f"range {label} holds none of the scored frames")
        if seen & set(part):
            raise ValueError(f"range {label} overlaps another: give each frame to one group")
        seen |= set(part)
        parts.append(part)
    return labels, parts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", nargs="+", help="files written by evaluate.py --json")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--groups", type=int, default=3, help="size groups of equal count (default 3)")
    how.add_argument("--ranges", help="comma list of frame ranges to group by instead, e.g. 364-383,384-408")
    p.add_argument("--data", help="dataset folder (default: the one the JSON names)")
    args = p.parse_args(argv)
    per_image: dict[str, dict[int, float]] = {}
    counts: dict[str, dict[int, tuple[int, int, int]]] = {}
    data = args.data
    for path in args.json:
        report = json.loads(Path(path).read_text())
        data = data or report["data"]
        for run in report["runs"]:
            if "per_image" in run:
                label = f"{run['loss']} ({run['name']})"
                if label in per_image:  # the same run name in two files: tell them apart
                    label = f"{label} [{path}]"
                per_image[label] = {int(n): s["dice"] for n, s in run["per_image"].items()}
                if all("tp" in s for s in run["per_image"].values()):
                    counts[label] = {int(n): (s["tp"], s["fp"], s["fn"]) for n, s in run["per_image"].items()}
    if not per_image:
        print("no scored runs in these files", file=sys.stderr)
        return 2
    frames = sorted(next(iter(per_image.values())))
    if any(sorted(scores) != frames for scores in per_image.values()):
        print("the runs were scored on different frames: score them on the same --test-frames",
              file=sys.stderr)  # fmt: skip
        return 2
    areas = polyp_areas(Path(data), frames)
    if args.ranges:
        try:
            labels, parts = frame_ranges(args.ranges, frames)
        except ValueError as e:
            print(f"--ranges: {e}", file=sys.stderr)
            return 2
        heading = "frame range"
    else:
        parts = size_groups(areas, args.groups)
        heading = "polyp area (% of frame)"
        labels = [f"{100 * areas[part[0]]:.1f}–{100 * areas[part[-1]]:.1f}" for part in parts]
    grouped = sum(map(len, parts))
    left = f"; {len(frames) - grouped} scored frames in no range" if grouped < len(frames) else ""
    print(f"mean per-image Dice ({grouped} frames of {data}, {len(parts)} groups{left})\n")
    print(f"| {heading} | frames | mean polyp area | " + " | ".join(per_image) + " |")
    print("|---|---|---|" + "---|" * len(per_image))
    for label, part, means in zip(labels, parts, group_means(per_image, parts)):
        cells = " | ".join(f"{means[run]:.3f}" for run in per_image)
        print(f"| {label} | {len(part)} | {100 * np.mean([areas[n] for n in part]):.1f} % | {cells} |")
    if counts:
        print("\npixel precision / recall / predicted over true polyp area, pooled over each group\n")
        print(f"| {heading} | " + " | ".join(counts) + " |")
        print("|---|" + "---|" * len(counts))
        for label, part in zip(labels, parts):
            rates = [pixel_rates(c, part) for c in counts.values()]
            cells = " | ".join(" / ".join("—" if v != v else f"{v:.2f}" for v in r) for r in rates)
            print(f"| {label} | {cells} |")
    if len(counts) < len(per_image):
        missing = ", ".join(run for run in per_image if run not in counts)  # in column order
        print(f"\nno pixel counts (JSON from an older evaluate.py): {missing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
