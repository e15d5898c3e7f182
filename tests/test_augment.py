"""Flips: image and mask move together, per sample, with probability p."""

from __future__ import annotations

import pytest
import torch

from unet_scratch.augment import (
    augment,
    color_jitter,
    parse_augment,
    random_affine,
    random_flips,
    random_rot90,
)


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


def binary_batch(n: int = 16, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Images that are their masks in three channels, so alignment is checkable exactly."""
    g = torch.Generator().manual_seed(3)
    masks = torch.zeros(n, 1, size, size)
    for k in range(n):
        y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        masks[k, :, y0 : y0 + size // 3, x0 : x0 + size // 4] = 1
    return masks.repeat(1, 3, 1, 1), masks


def test_rot90_keeps_alignment_and_uses_all_angles() -> None:
    images, masks = binary_batch(32)
    out_i, out_m = random_rot90(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(out_i[:, :1], out_m)
    seen = set()
    for k in range(32):
        seen.add(next(r for r in range(4) if torch.equal(out_m[k], masks[k].rot90(r, (-2, -1)))))
    assert seen == {0, 1, 2, 3}


def test_affine_keeps_alignment_and_binary_masks() -> None:
    images, masks = binary_batch()
    out_i, out_m = random_affine(images, masks, torch.Generator().manual_seed(0))
    assert out_i.shape == images.shape and out_m.shape == masks.shape
    assert set(out_m.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal((out_i[:, :1] > 0.5).float(), out_m)  # same grid for image and mask
    assert not torch.equal(out_m, masks)
    same = random_affine(images, masks, torch.Generator().manual_seed(0), scale=(1, 1), degrees=0, shift=0)
    assert torch.allclose(same[0], images, atol=1e-5) and torch.equal(same[1], masks)  # identity


def test_color_jitter_changes_images_only_within_range() -> None:
    images, masks = make_batch(8)
    out = color_jitter(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    assert not torch.allclose(out, images)
    assert torch.allclose(color_jitter(images, torch.Generator(), strength=0.0), images, atol=1e-6)
    a, m = augment(images, masks, "color", torch.Generator().manual_seed(0))
    assert torch.equal(m, masks)


def test_augment_names() -> None:
    assert parse_augment("flips, rot90") == ["flips", "rot90"] and parse_augment("none") == []
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'"):
        parse_augment("flips,mixup")
    images, masks = make_batch(4)
    assert torch.equal(augment(images, masks, "none", torch.Generator())[0], images)
    # "flips" alone is exactly the reference flips, draw for draw
    a = augment(images, masks, "flips", torch.Generator().manual_seed(9))
    b = random_flips(images, masks, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
