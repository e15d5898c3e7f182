"""Post-processing of masks: regions, the largest, small ones dropped, holes filled; and the
meter scoring a post-processed mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unet_scratch.errors import UserError
from unet_scratch.evaluate import postprocessed
from unet_scratch.metrics import SegmentationMeter
from unet_scratch.postprocess import apply, components, parse_postprocess


def picture(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows])


SCENE = picture(
    [
        "##.......",
        "##...###.",
        ".....#.#.",
        "....####.",
        "#........",
    ]
)  # a 2x2 block, a ring of 8 with a 1-pixel hole (and a tail), a lone pixel


def test_regions_are_8_connected() -> None:
    labels, count = components(SCENE)
    assert count == 3
    assert sorted(np.bincount(labels.ravel())[1:].tolist()) == [1, 4, 9]
    diagonal = picture(["#.", ".#"])
    assert components(diagonal)[1] == 1  # touching corners are one region


def test_steps() -> None:
    assert (apply(SCENE, [("largest", 0)]) == (components(SCENE)[0] == 2)).all()  # the ring
    small_dropped = apply(SCENE, [("min-area", 4 / SCENE.size)])
    assert small_dropped.sum() == 13 and not small_dropped[4, 0]  # the lone pixel goes, the block stays
    filled = apply(SCENE, [("fill-holes", 0)])
    assert filled[2, 6] and filled.sum() == SCENE.sum() + 1  # the enclosed pixel, nothing else
    assert not apply(picture(["...", ".#.", "..."]), [("fill-holes", 0)])[0, 0]  # open background stays


def test_parse() -> None:
    assert parse_postprocess("largest, fill-holes,min-area:0.01") == [
        ("largest", 0.0),
        ("fill-holes", 0.0),
        ("min-area", 0.01),
    ]
    assert parse_postprocess("none") == [] and parse_postprocess("") == []
    for bad in ("biggest", "min-area", "min-area:x", "largest:2"):
        with pytest.raises(UserError, match="--postprocess"):
            parse_postprocess(bad)
    assert parse_postprocess("min-area:0") == [("min-area", 0.0)]  # drops nothing, allowed
    # not a fraction of the frame: 50 (read as pixels or per cent) would drop every region
    for bad in ("min-area:50", "min-area:1", "min-area:-0.01", "min-area:nan", "min-area:inf"):
        with pytest.raises(UserError, match=r"min-area takes a fraction of the frame in \[0, 1\)"):
            parse_postprocess(bad)


def test_scores_use_the_post_processed_mask() -> None:
    prob = torch.from_numpy(SCENE.astype(np.float32) * 0.9)[None, None]
    target = torch.from_numpy(apply(SCENE, [("largest", 0)]).astype(np.float32))[None, None]
    plain, after = SegmentationMeter(), SegmentationMeter()
    plain.update(prob, target)
    after.update(prob, target, postprocessed(prob, 0.5, [("largest", 0)]))
    assert plain.dice[0] == pytest.approx(2 * 9 / (14 + 9)) and after.dice[0] == 1.0
    # the probabilities themselves are untouched, for both soft scores
    assert after.soft_dice == plain.soft_dice and after.soft_jaccard == plain.soft_jaccard
    assert postprocessed(prob, 0.5, []) is None


def test_a_hole_closed_by_a_diagonal_is_filled() -> None:
    # the polyp is 8-connected, so its background is 4-connected: the centre cannot leak out
    # through the diagonal gap at its top right
    ring = picture([".....", ".##..", ".#.#.", "..##.", "....."])
    filled = apply(ring, [("fill-holes", 0)])
    assert filled[2, 2] and filled.sum() == ring.sum() + 1


def flood_fill_labels(mask: np.ndarray, neighbours: list[tuple[int, int]]) -> np.ndarray:
    """A plain pixel-by-pixel flood fill, numbering regions in raster order: the reference."""
    labels, count = np.zeros(mask.shape, np.int32), 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        count += 1
        labels[y, x], stack = count, [(y, x)]
        while stack:
            cy, cx = stack.pop()
            for dy, dx in neighbours:
                ny, nx = cy + dy, cx + dx
                inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                if inside and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = count
                    stack.append((ny, nx))
    return labels


def test_holes_filled_are_the_background_regions_that_touch_no_border() -> None:
    """The reference: a hole is a 4-connected background region (the polyp being 8-connected)
    that reaches none of the four borders; random masks give bays open to every side."""
    four = [(-1, 0), (0, -1), (0, 1), (1, 0)]
    rng = np.random.default_rng(0)
    for density in (0.5, 0.6, 0.7):
        for _ in range(20):
            mask = rng.random((12, 17)) < density
            background = flood_fill_labels(~mask, four)
            edge = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
            holes = (background > 0) & ~np.isin(background, edge)
            assert np.array_equal(apply(mask, [("fill-holes", 0)]), mask | holes)


def test_a_probability_at_the_threshold_is_background_after_post_processing_too() -> None:
    # as in the metrics and predict.py: polyp is p > threshold (a logit of exactly 0 is p = 0.5)
    assert not postprocessed(torch.full((1, 1, 4, 4), 0.5), 0.5, [("min-area", 0.0)]).any()


@pytest.mark.parametrize("connectivity", [8, 4])
def test_components_equal_a_flood_fill(connectivity: int) -> None:
    eight = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    neighbours = eight if connectivity == 8 else [(-1, 0), (0, -1), (0, 1), (1, 0)]
    rng = np.random.default_rng(0)
    for density in (0.2, 0.45, 0.6, 0.8):  # from scattered specks to one winding region with holes
        mask = rng.random((37, 53)) < density
        labels, count = components(mask, connectivity)
        want = flood_fill_labels(mask, neighbours)
        assert count == want.max() and np.array_equal(labels, want)
    assert components(np.zeros((4, 5), bool))[1] == 0
