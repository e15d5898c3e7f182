"""Flips: image and mask move together, per sample, with probability p."""

from __future__ import annotations

import torch

from unet_scratch.augment import random_flips


def make_batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    images = torch.rand(n, 3, 8, 8)
    masks = (images[:, :1] > 0.5).float()  # the mask is a function of the image
    return images, masks


def test_flips_keep_image_and_mask_aligned() -> None:
    images, masks = make_batch()
    out_i, out_m = random_flips(images, masks, torch.Generator().manual_seed(1))
    assert torch.equal(out_m, (out_i[:, :1] > 0.5).float())
    kinds = []
    for k in range(len(images)):
        variants = {
            "none": images[k],
            "h": images[k].flip(-1),
            "v": images[k].flip(-2),
            "hv": images[k].flip(-1).flip(-2),
        }
        kinds.append(next(name for name, v in variants.items() if torch.equal(v, out_i[k])))
    # independent per sample: all four variants occur, each roughly a quarter of the time
    counts = {name: kinds.count(name) for name in ("none", "h", "v", "hv")}
    assert all(4 <= c <= 28 for c in counts.values()), counts


def test_probability_extremes_and_determinism() -> None:
    images, masks = make_batch(8)
    same = random_flips(images, masks, torch.Generator().manual_seed(0), p=0.0)
    assert torch.equal(same[0], images) and torch.equal(same[1], masks)
    both = random_flips(images, masks, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(both[0], images.flip(-1).flip(-2)) and torch.equal(both[1], masks.flip(-1).flip(-2))
    a = random_flips(images, masks, torch.Generator().manual_seed(5))
    b = random_flips(images, masks, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0])
