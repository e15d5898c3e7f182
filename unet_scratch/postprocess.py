"""Post-processing of a predicted mask: keep the largest region, drop small ones, fill holes.

Options for evaluate.py and predict.py (``--postprocess``, a comma list applied in order):

- ``largest``: keep only the largest connected region (8-connected);
- ``min-area:F``: drop regions smaller than a fraction F of the frame (e.g. ``min-area:0.002``);
- ``fill-holes``: background enclosed by polyp (not 4-connected to the frame's border) becomes polyp.

They act on the thresholded mask only; probabilities are left as they are. Whether any of them
helps is decided on validation folds per loss (docs/RESULTS.md); by default none is applied.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import UserError


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The horizontal runs of True in ``mask (H, W)``: ``(row, start, end)`` arrays, end
    exclusive, in raster order."""
    padded = np.pad(mask.astype(np.int8), ((0, 0), (1, 1)))
    rows, starts = np.nonzero(np.diff(padded, axis=1) == 1)  # False -> True: a run starts
    _, ends = np.nonzero(np.diff(padded, axis=1) == -1)  # True -> False: it ends (same order)
    return rows, starts, ends


def components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label the connected regions of a boolean ``mask (H, W)``: ``(labels, count)``, labels 1..count
    (0 outside), numbered in raster order of their first pixel; ``connectivity`` 8 or 4.

    Pixels are grouped into horizontal runs first, and only runs of neighbouring rows are
    joined (union-find): a frame's mask has a few thousand runs but millions of pixels, so this
    stays fast at 1080p where a pixel-by-pixel flood fill in Python takes seconds.
    """
    rows, starts, ends = _runs(mask)
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    reach = 1 if connectivity == 8 else 0  # 8-connected runs may touch at a corner only
    row_start = np.searchsorted(rows, np.arange(mask.shape[0] + 1))  # runs of row y: [row_start[y], ...[y+1])
    for y in range(mask.shape[0] - 1):
        a, a_end, b_end = row_start[y], row_start[y + 1], row_start[y + 2]
        b = a_end
        while a < a_end and b < b_end:  # two pointers over two sorted, disjoint lists of runs
            if starts[a] < ends[b] + reach and starts[b] < ends[a] + reach:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)  # the root is the component's first run
            if ends[a] < ends[b]:
                a += 1
            else:
                b += 1
    roots = np.array([find(i) for i in range(len(rows))], dtype=np.int64)
    first_runs = np.unique(roots)  # sorted run indices = raster order of each region's first pixel
    run_labels = np.searchsorted(first_runs, roots) + 1
    labels = np.zeros(mask.shape, np.int32)
    lengths = ends - starts
    flat = np.repeat(rows * mask.shape[1] + starts - np.cumsum(lengths) + lengths, lengths)
    labels.ravel()[flat + np.arange(lengths.sum())] = np.repeat(run_labels, lengths)
    return labels, len(first_runs)


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
    labels, count = components(~mask, connectivity=4)
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
                fraction = float(value)
            except ValueError:
                fraction = math.nan
            # a fraction of the frame: 50 (pixels? per cent?) would drop every region
            if not 0 <= fraction < 1:  # also nan
                raise UserError(
                    f"--postprocess {part}: min-area takes a fraction of the frame in [0, 1), e.g. "
                    "min-area:0.002 (0.2 %)"
                )
            steps.append((name, fraction))
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
