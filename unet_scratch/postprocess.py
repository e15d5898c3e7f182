"""Post-processing of a predicted mask: keep the largest region, drop small ones, fill holes.

Options for evaluate.py and predict.py (``--postprocess``, a comma list applied in order):

- ``largest``: keep only the largest connected region (8-connected);
- ``min-area:F``: drop regions smaller than a fraction F of the frame (e.g. ``min-area:0.002``);
- ``fill-holes``: background enclosed by polyp (not 4-connected to the frame's border) becomes polyp.

They act on the thresholded mask only; probabilities are left as they are. Whether any of them
helps is decided on validation folds per loss (docs/RESULTS.md); by default none is applied.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .errors import UserError

NEIGHBOURS_8 = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
NEIGHBOURS_4 = [(-1, 0), (0, -1), (0, 1), (1, 0)]


def components(mask: np.ndarray, neighbours: list[tuple[int, int]] = NEIGHBOURS_8) -> tuple[np.ndarray, int]:
    """Label the connected regions of a boolean ``mask (H, W)``: ``(labels, count)``, labels 1..count
    (0 outside), numbered in raster order of their first pixel."""
    labels = np.zeros(mask.shape, np.int32)
    height, width = mask.shape
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        count += 1
        labels[y, x] = count
        queue = deque([(y, x)])
        while queue:  # breadth-first flood fill of this region
            cy, cx = queue.popleft()
            for dy, dx in neighbours:
                ny, nx = cy + dy, cx + dx
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = count
                    queue.append((ny, nx))
    return labels, count


def largest_region(mask: np.ndarray) -> np.ndarray:
    labels, count = components(mask)
    if count <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def drop_small(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    labels, count = components(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_fraction * mask.size
    keep[0] = False
    return keep[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    labels, count = components(~mask, NEIGHBOURS_4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    holes = ~np.isin(labels, border) & (labels > 0)
    return mask | holes


def parse_postprocess(spec: str) -> list[tuple[str, float]]:
    """``"largest,fill-holes"`` -> ``[("largest", 0), ("fill-holes", 0)]``; raises on unknown steps."""
    steps = []
    for part in (p.strip() for p in (spec or "").split(",")):
        if not part or part == "none":
            continue
        name, _, value = part.partition(":")
        if name in ("largest", "fill-holes") and not value:
            steps.append((name, 0.0))
        elif name == "min-area" and value:
            try:
                steps.append((name, float(value)))
            except ValueError:
                raise UserError(
                    f"--postprocess {part}: min-area takes a fraction of the frame, e.g. min-area:0.002"
                ) from None
        else:
            raise UserError(
                f"--postprocess: unknown step {part!r}; use largest, fill-holes, min-area:F or none"
            )
    return steps


def apply(mask: np.ndarray, steps: list[tuple[str, float]]) -> np.ndarray:
    """The steps of :func:`parse_postprocess` applied in order to a boolean ``mask (H, W)``."""
    for name, value in steps:
        if name == "largest":
            mask = largest_region(mask)
        elif name == "min-area":
            mask = drop_small(mask, value)
        else:
            mask = fill_holes(mask)
    return mask
