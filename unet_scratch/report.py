"""Reporting: the markdown results table, learning curves and prediction overlays."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .errors import MissingExtra
from .files import save_figure, save_png
from .progress import format_duration

LOSS_ORDER = ("dice", "jaccard", "focal", "combined")

GT_COLOUR = (0, 255, 0)  # ground-truth contour: green
PRED_COLOUR = (255, 220, 0)  # predicted contour: yellow


def _fmt_seconds(s: float | None) -> str:
    return "—" if s is None else format_duration(s)


def results_table(rows: list[dict[str, Any]], full_res: bool = False) -> str:
    """One markdown row per run; a run without scores shows its problem in the row. With
    ``full_res`` two more columns: Dice and Jaccard at the frames' original size."""
    columns = ["loss", "run", "Dice", "Jaccard", "Dice 95% CI", "soft Dice", "soft Jaccard", "pooled Dice"]
    columns += ["Dice full res", "Jaccard full res"] if full_res else []
    columns += ["best epoch", "train time"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['loss']} | {r['name']} | {r['error']} |" + " — |" * (len(columns) - 3))
            continue
        lo, hi = r["dice_ci95"]
        cells = [
            r["loss"],
            r["name"],
            f"{r['dice']:.4f}",
            f"{r['jaccard']:.4f}",
            f"[{lo:.3f}, {hi:.3f}]",
            f"{r['soft_dice']:.4f}",
            f"{r['soft_jaccard']:.4f}",
            f"{r['pooled_dice']:.4f}",
        ]
        if full_res:
            cells += [f"{r['full_res']['dice']:.4f}", f"{r['full_res']['jaccard']:.4f}"]
        epoch = r["best_epoch"]  # a list for an ensemble: each member's
        cells += [", ".join(map(str, epoch)) if isinstance(epoch, list) else str(epoch)]
        cells += [_fmt_seconds(r["train_seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def natural_key(text: str) -> list[str | tuple[int, str]]:
    """A sort key that reads the numbers in ``text`` as numbers: ``"seed-2"`` before
    ``"seed-10"``, ``", 20 epochs"`` before ``", 100 epochs"`` (as text, "1" sorts before "2");
    ``"s01"`` and ``"s1"`` tie."""
    # re.split with a group alternates text and digits, so the keys compare text with text and
    # number with number; a number as (how many digits it has without its leading zeros, those
    # digits), not int(): Python refuses to convert more than 4300 digits, and a name may hold them
    parts = re.split(r"([0-9]+)", text)
    return [(len(p.lstrip("0")), p.lstrip("0")) if i % 2 else p for i, p in enumerate(parts)]


def sort_runs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order dice, jaccard, focal, combined, then any other loss; by name within a loss, its
    numbers read as numbers (:func:`natural_key`; ``s01`` and ``s1`` as text between them)."""
    rank = {name: i for i, name in enumerate(LOSS_ORDER)}
    return sorted(
        rows, key=lambda r: (rank.get(r["loss"], len(rank)), r["loss"], natural_key(r["name"]), r["name"])
    )


# ----------------------------------------------------------------------------- learning curves


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """``metrics.csv`` as a list of rows of floats (empty when the file is missing)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's ``config.json``; ``{}`` when it is missing, unreadable or not a JSON object (for
    labels and checks, not for loading a model)."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def run_label(run_dir: Path, config: dict[str, Any] | None = None) -> str:
    """A run's name for a legend: its loss (from config.json, or ``config`` where it has been
    read already), and its folder name where that says more (``combined: tuned-f1-s47``)."""
    loss = (read_config(run_dir) if config is None else config).get("loss")
    return run_dir.name if loss is None else loss_label(loss, run_dir.name)


def loss_label(loss: str, name: str) -> str:
    """``"loss: name"``, or plain ``loss`` where the name says no more (``runs/dice``)."""
    return loss if name == loss else f"{loss}: {name}"


def run_labels(run_dirs: list[Path]) -> list[str]:
    """:func:`run_label` of each run, told apart (:func:`qualifiers`) where two share one."""
    configs = [read_config(d) for d in run_dirs]  # each config.json read once
    labels = [run_label(d, c) for d, c in zip(run_dirs, configs)]
    return [lab + q for lab, q in zip(labels, qualifiers(labels, run_dirs, configs))]


def first_given(folders: Sequence[str | Path]) -> list[int]:
    """For each folder, the index of the first one in ``folders`` that is the same folder,
    however spelled (``a/x``, ``b/../a/x``, a symlink to it): ``i`` where folder ``i`` is new.
    What ``evaluate.py`` dedupes by, an ensemble refuses by and :func:`qualifiers`
    tells runs apart by."""
    first: dict[Path, int] = {}  # resolved folder -> where it was first given
    return [first.setdefault(Path(f).resolve(), i) for i, f in enumerate(folders)]


def qualifiers(keys: Sequence[Hashable], run_dirs: list[Path], configs: list[dict[str, Any]]) -> list[str]:
    """What to add to each run's name so that runs sharing a key (the same recipe trained for
    20 and 40 epochs into two folders) are told apart: ``", 40 epochs"`` where their epoch
    counts differ, and ``" (its path)"`` where two still match; ``""`` for a run whose key is
    its own (a folder given twice, however spelled, keeps its one name)."""

    def distinct(keys: Sequence[Hashable], values: list[Any]) -> dict[Hashable, set[Any]]:
        """key -> the different values the runs bearing it have."""
        out: dict[Hashable, set[Any]] = {}
        for key, value in zip(keys, values):
            out.setdefault(key, set()).add(value)
        return out

    epochs = [c.get("epochs") for c in configs]
    counts = distinct(keys, epochs)
    quals = [f", {e} epochs" if len(counts[k]) > 1 and e else "" for k, e in zip(keys, epochs)]
    keyed: list[Hashable] = list(zip(keys, quals))
    folders = distinct(keyed, first_given(run_dirs))  # the same folder however spelled
    return [q + (f" ({d})" if len(folders[k]) > 1 else "") for k, q, d in zip(keyed, quals, run_dirs)]


def plot_curves(run_dirs: list[Path], out: str | Path) -> Path:
    """Train loss and validation Dice/IoU per epoch for every run, one PNG (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingExtra(
            "--curves needs matplotlib: pip install matplotlib (the [plot] extra)"
        ) from e
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (
        ("train_loss", "train loss"),
        ("val_dice", "validation mDice@0.5"),
        ("val_iou", "validation mIoU@0.5"),
    )
    drawn = [(d, rows) for d in run_dirs if (rows := read_metrics(d))]  # a run not started: no line
    labels = run_labels([d for d, _ in drawn])  # told apart among the runs drawn only
    for (_, rows), label in zip(drawn, labels):
        epochs = [r["epoch"] for r in rows]
        for ax, (key, _) in zip(axes, panels):
            ax.plot(epochs, [r.get(key, np.nan) for r in rows], marker=".", label=label)
    for ax, (key, title) in zip(axes, panels):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if not any(key in r for _, rows in drawn for r in rows):  # say why a panel is empty
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no validation frames:\ntrain with --val-frames", transform=ax.transAxes,
                    ha="center", va="center", color="#777777")  # fmt: skip
    axes[0].legend()
    fig.tight_layout()
    return save_figure(fig, out, "--curves", dpi=100)


# ----------------------------------------------------------------------------- overlays


def contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The boundary band of a boolean mask, ``width`` pixels wide (the mask minus its
    ``width``-fold 4-neighbour erosion)."""
    eroded = mask
    for _ in range(width):
        p = np.pad(eroded, 1)
        eroded = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~eroded


def outline_overlay(image: np.ndarray, mask: np.ndarray, tint: float = 0.35) -> np.ndarray:
    """``image (H, W, 3)`` uint8 with the polyp ``mask (H, W)`` bool tinted and outlined in
    :data:`PRED_COLOUR`; the outline is about 1/300 of the shorter side wide (at least 1 px)."""
    out = image.astype(np.float32)
    colour = np.asarray(PRED_COLOUR, np.float32)
    out[mask] = (1 - tint) * out[mask] + tint * colour
    out[contour(mask, max(1, round(min(mask.shape) / 300)))] = colour
    return out.round().astype(np.uint8)


def overlay_tiles(image: np.ndarray, target: np.ndarray, pred: np.ndarray, scale: int) -> np.ndarray:
    """Four tiles side by side: frame, ground truth, prediction, contours on the frame.

    ``image (3, S, S) uint8``, ``target (S, S)`` {0, 1}, ``pred (S, S)`` bool (the predicted
    mask, as scored); returns ``(S * scale, 4 * S * scale, 3) uint8``.
    """
    rgb = image.transpose(1, 2, 0)
    gt = target > 0.5
    rgb_big, gt_big, pred_big = (
        np.repeat(np.repeat(a, scale, 0), scale, 1) for a in (rgb, gt, pred)
    )  # nearest upscaling keeps pixels honest
    over = rgb_big.copy()
    over[contour(gt_big)] = GT_COLOUR
    over[contour(pred_big)] = PRED_COLOUR
    gray = lambda m: np.repeat((m.astype(np.uint8) * 255)[..., None], 3, axis=2)  # noqa: E731
    return np.concatenate([rgb_big, gray(gt_big), gray(pred_big), over], axis=1)


# the overlay grid's layout: a header row of column titles, a white line between tiles (the
# ground-truth and prediction tiles are black where there is no polyp and would run together)
GRID_HEADER, GRID_GAP = 16, 4
# each column's titles, longest first: the first that fits the tile is drawn
GRID_COLUMNS = (
    ("frame",),
    ("ground truth", "truth"),
    ("prediction (as scored)", "prediction"),
    ("outlines: truth green, prediction yellow", "truth green, prediction yellow", "outlines"),
)


def write_overlay_grid(
    images: np.ndarray,
    targets: np.ndarray,
    preds: np.ndarray,
    labels: list[str],
    out: str | Path,
) -> tuple[int, int]:
    """One PNG, a row of :func:`overlay_tiles` per frame with its label under a row of column
    titles; returns (width, height). Tile (row r, column c) starts at
    ``x = c * (T + GRID_GAP)``, ``y = GRID_HEADER + r * (T + GRID_GAP)``, T the tile's side.

    ``images (N, 3, S, S)``, ``targets (N, 1, S, S)``, ``preds (N, 1, S, S)`` bool.
    """
    size = images.shape[-1]
    scale = max(1, 256 // size)
    tile, step = size * scale, size * scale + GRID_GAP
    canvas = np.full((GRID_HEADER + len(images) * step - GRID_GAP, 4 * step - GRID_GAP, 3), 255, np.uint8)
    for r, (i, t, p) in enumerate(zip(images, targets, preds)):
        row = overlay_tiles(i, t[0], p[0], scale)
        y = GRID_HEADER + r * step
        for c in range(4):
            canvas[y : y + tile, c * step : c * step + tile] = row[:, c * tile : (c + 1) * tile]
    grid = Image.fromarray(canvas)
    draw = ImageDraw.Draw(grid)
    for c, titles in enumerate(GRID_COLUMNS):
        title = next((t for t in titles if draw.textlength(t) <= tile - 6), titles[-1])
        draw.text((c * step + 3, 2), title, fill=(0, 0, 0))
    for r, label in enumerate(labels):
        y = GRID_HEADER + r * step
        draw.rectangle([0, y, 7 * len(label) + 6, y + 14], fill=(0, 0, 0))
        draw.text((3, y + 2), label, fill=(255, 255, 255))
    save_png(grid, out, "--overlays")
    return grid.size
