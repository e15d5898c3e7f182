"""Augmentations: image and mask move together, per sample, with their probabilities and ranges."""

from __future__ import annotations

import pytest
import torch

from unet_scratch.augment import (
    augment,
    color_jitter,
    copy_paste,
    cutmix,
    gaussian_blur,
    gaussian_noise,
    parse_augment,
    random_affine,
    random_flips,
    random_gamma,
    random_rot90,
    simulate_low_resolution,
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


# ----------------------------------------------------------------------------- nnU-Net-style and mixing


def test_gamma_is_a_power_per_sample() -> None:
    images, masks = make_batch(8)
    out = random_gamma(images, torch.Generator().manual_seed(0), gamma=(1.5, 1.5), p=1.0)
    torch.testing.assert_close(out, images.clamp_min(1e-6) ** 1.5)
    assert torch.equal(random_gamma(images, torch.Generator(), p=0.0), images)
    chosen = [
        not torch.equal(o, i)
        for o, i in zip(
            random_gamma(make_batch(400)[0], torch.Generator().manual_seed(1)), make_batch(400)[0]
        )
    ]
    assert sum(chosen) / 400 == pytest.approx(0.3, abs=0.07)  # p = 0.3 per sample


def test_blur_is_a_normalised_gaussian() -> None:
    flat = torch.full((2, 3, 16, 16), 0.4)
    torch.testing.assert_close(gaussian_blur(flat, torch.Generator(), p=1.0), flat)  # replicate padding
    delta = torch.zeros(1, 1, 15, 15)
    delta[..., 7, 7] = 1.0
    out = gaussian_blur(delta, torch.Generator().manual_seed(0), sigma=(1.0, 1.0), p=1.0)[0, 0]
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)  # mass kept
    k = torch.exp(-0.5 * torch.arange(-3.0, 4.0) ** 2)
    k = k / k.sum()
    torch.testing.assert_close(out[4:11, 4:11], torch.outer(k, k))  # the separable sigma-1 kernel


def test_noise_and_low_resolution() -> None:
    images, _ = make_batch(8)
    noisy = gaussian_noise(images, torch.Generator().manual_seed(0), sigma=0.05, p=1.0)
    assert 0 <= noisy.min() and noisy.max() <= 1 and (noisy - images).abs().max() < 0.3
    assert (noisy - images).abs().mean() > 1e-3
    g = torch.Generator()
    assert torch.equal(simulate_low_resolution(images, g, zoom=(1.0, 1.0), p=1.0), images)
    low = simulate_low_resolution(images, g, zoom=(2.0, 2.0), p=1.0)  # 2x2 cells, each its top-left pixel
    assert torch.equal(low, images[..., ::2, ::2].repeat_interleave(2, -1).repeat_interleave(2, -2))


@pytest.mark.parametrize("mix", [copy_paste, cutmix])
def test_mixing_keeps_image_and_mask_aligned(mix) -> None:  # noqa: ANN001
    images, masks = binary_batch(16)  # images are their masks: alignment is exact
    out_i, out_m = mix(images, masks, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(out_i[:, :1], out_m) and set(out_m.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(out_m, masks)
    same = mix(images, masks, torch.Generator().manual_seed(0), p=0.0)
    assert torch.equal(same[0], images) and torch.equal(same[1], masks)


def test_copy_paste_adds_another_samples_polyp() -> None:
    images, masks = binary_batch(16)
    images = images * torch.arange(1, 17).view(16, 1, 1, 1) / 16  # tell the samples apart
    out_i, out_m = copy_paste(images, masks, torch.Generator().manual_seed(0), p=1.0)
    # p = 1: every sample k gets the polyp pixels of sample (k + s) % 16, for one s in 1..15 (a
    # derangement), image values and mask alike; the mask becomes the union
    matches = []
    for s in range(1, 16):
        source = (torch.arange(16) + s) % 16
        paste = masks[source] > 0.5
        if torch.equal(out_m, torch.maximum(masks, masks[source])) and torch.equal(
            out_i, torch.where(paste, images[source], images)
        ):
            matches.append(s)
    assert len(matches) == 1, matches
    assert (out_m > masks).flatten(1).any(1).sum() >= 8  # most samples gained polyp pixels


def test_cutmix_box_area() -> None:
    images = torch.arange(64.0).view(64, 1, 1, 1).expand(64, 3, 32, 32) / 64  # every sample its own value
    masks = torch.zeros(64, 1, 32, 32)
    out_i, _ = cutmix(images, masks, torch.Generator().manual_seed(0), p=1.0)
    changed = (out_i[:, 0] != images[:, 0]).float()
    area = changed.flatten(1).mean(1)
    assert area.min() > 0.2 and area.max() < 0.56  # a quarter to half of the frame, for every sample
    rows, cols = changed.any(2), changed.any(1)  # a box: its area is its height times its width
    assert torch.equal(changed.flatten(1).sum(1), rows.sum(1) * cols.sum(1))


@pytest.mark.parametrize(
    "name, direct",
    [
        ("rot90", lambda i, m, g: random_rot90(i, m, g)),
        ("affine", lambda i, m, g: random_affine(i, m, g, scale=(0.75, 1.25), degrees=20.0, shift=0.1)),
        ("affine-wide", lambda i, m, g: random_affine(i, m, g, scale=(0.7, 1.4), degrees=45.0, shift=0.1)),
        ("color", lambda i, m, g: (color_jitter(i, g, strength=0.2), m)),
        ("color-wide", lambda i, m, g: (color_jitter(i, g, strength=0.4), m)),
        ("gamma", lambda i, m, g: (random_gamma(i, g, gamma=(0.7, 1.5), p=0.3), m)),
        ("blur", lambda i, m, g: (gaussian_blur(i, g, sigma=(0.5, 1.0), p=0.2), m)),
        ("noise", lambda i, m, g: (gaussian_noise(i, g, sigma=0.05, p=0.15), m)),
        ("lowres", lambda i, m, g: (simulate_low_resolution(i, g, zoom=(1.0, 2.0), p=0.25), m)),
        ("copypaste", lambda i, m, g: copy_paste(i, m, g, p=0.5)),
        ("cutmix", lambda i, m, g: cutmix(i, m, g, area=(0.25, 0.5), p=0.5)),
    ],
)
def test_each_name_runs_its_augmentation_with_the_documented_ranges(name: str, direct) -> None:  # noqa: ANN001
    images, masks = binary_batch(32)
    a = augment(images, masks, name, torch.Generator().manual_seed(3))
    b = direct(images, masks, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], images)  # it did something


def test_affine_rotates_by_the_drawn_angle_in_degrees() -> None:
    # a horizontal bar through the centre: rotated by more than 45 degrees it becomes more tall than wide
    masks = torch.zeros(1, 1, 33, 33)
    masks[..., 16, 6:27] = 1
    images = masks.repeat(1, 3, 1, 1)
    _, out = random_affine(images, masks, torch.Generator(), scale=(1, 1), degrees=0, shift=0)
    assert torch.equal(out, masks)
    checked = 0
    for seed in range(12):
        draws = torch.rand(2, generator=torch.Generator().manual_seed(seed))  # the scale's draw, the angle's
        angle = draws[1].item() * 180 - 90
        if abs(abs(angle) - 45) < 10:
            continue  # too close to the diagonal to tell
        _, out = random_affine(images, masks, torch.Generator().manual_seed(seed), (1, 1), 90.0, 0.0)
        ys, xs = out[0, 0].nonzero(as_tuple=True)
        tall = (ys.max() - ys.min()).item() > (xs.max() - xs.min()).item()
        assert tall == (abs(angle) > 45), (seed, angle)  # degrees, not radians
        checked += 1
    assert checked >= 6


def test_affine_rotation_keeps_a_discs_area() -> None:
    """A rotation preserves area exactly; a wrong sign in one entry of the matrix turns it into a
    shear that changes it by 1 / cos(2 angle) (30 % at 20 degrees), with image and mask still aligned."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = (((yy - 31.5) ** 2 + (xx - 31.5) ** 2) < 12**2).float()[None, None]
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        _, out = random_affine(disc.repeat(1, 3, 1, 1), disc, g, (1, 1), 20.0, 0.0)
        assert out.sum().item() == pytest.approx(disc.sum().item(), rel=0.03), seed


@pytest.mark.parametrize(
    "degrade, p",
    [
        (lambda x, g, p: gaussian_blur(x, g, p=p), 0.2),
        (lambda x, g, p: gaussian_noise(x, g, p=p), 0.15),
        (lambda x, g, p: simulate_low_resolution(x, g, zoom=(2.0, 2.0), p=p), 0.25),
    ],
)
def test_each_degradation_touches_a_sample_with_its_probability(degrade, p: float) -> None:  # noqa: ANN001
    images = make_batch(400)[0]
    assert torch.equal(degrade(images, torch.Generator(), 0.0), images)
    out = degrade(images, torch.Generator().manual_seed(1), p)
    changed = [not torch.equal(o, i) for o, i in zip(out, images)]
    assert sum(changed) / 400 == pytest.approx(p, abs=0.06)


def test_affine_zoom_and_shift_ranges() -> None:
    masks = torch.zeros(1, 1, 64, 64)
    masks[..., 24:40, 24:40] = 1  # 16 x 16, centred
    images = masks.repeat(1, 3, 1, 1)
    _, big = random_affine(images, masks, torch.Generator(), scale=(2, 2), degrees=0, shift=0)
    assert big.sum().item() == pytest.approx(4 * masks.sum().item(), rel=0.1)  # scale 2: twice the side
    largest = 0.0
    for seed in range(20):  # shift at most 10 % of the frame (6.4 px) either way
        # the draws in order: scale, angle, then the shift in x and in y, each U(-0.1, 0.1) of the frame
        u = torch.rand(4, generator=torch.Generator().manual_seed(seed))
        shift_px = ((0.2 * u[2:] - 0.1) * 64).abs()  # (x, y) in pixels
        _, moved = random_affine(images, masks, torch.Generator().manual_seed(seed), scale=(1, 1), degrees=0)
        ys, xs = moved[0, 0].nonzero(as_tuple=True)
        dx, dy = abs(xs.float().mean() - 31.5).item(), abs(ys.float().mean() - 31.5).item()
        assert dx <= 6.5 and dy <= 6.5
        # the block moves by the drawn shift, along its own axis (within the half pixel of resampling)
        assert dx == pytest.approx(shift_px[0].item(), abs=0.55) and dy == pytest.approx(
            shift_px[1].item(), abs=0.55
        ), (seed, dx, dy, shift_px)
        largest = max(largest, dx, dy)
    assert largest > 5  # the range is used, up to ~6.4 px


def test_contrast_jitter_keeps_each_images_own_mean() -> None:
    images = torch.rand(4, 3, 8, 8) * torch.tensor([0.2, 0.4, 0.6, 0.8]).view(4, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    b = images.shape[0]
    # reproduce the draws: brightness then contrast then saturation factors, one per image
    draws = [torch.rand(b, 1, 1, 1, generator=g) for _ in range(3)]
    out = color_jitter(images, torch.Generator().manual_seed(0))
    bright = images * (0.8 + 0.4 * draws[0])
    mean = bright.mean(dim=(1, 2, 3), keepdim=True)
    contrast = mean + (bright - mean) * (0.8 + 0.4 * draws[1])
    gray = (contrast * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    expected = (gray + (contrast - gray) * (0.8 + 0.4 * draws[2])).clamp(0, 1)
    torch.testing.assert_close(out, expected)


def test_copy_paste_never_pastes_a_sample_onto_itself() -> None:
    images, masks = binary_batch(6)
    images = images * torch.arange(1, 7).view(6, 1, 1, 1)  # sample k has value k where it is polyp
    for seed in range(40):
        out, _ = copy_paste(images, masks, torch.Generator().manual_seed(seed), p=1.0)
        assert all(not torch.equal(out[k], images[k]) for k in range(6))  # p = 1: every sample gets a polyp
        for k in range(6):
            new = out[k, 0][out[k, 0] != images[k, 0]]
            assert not (new == k + 1).any()


def test_noise_strength_varies_per_sample() -> None:
    images = torch.full((200, 1, 16, 16), 0.5)
    out = gaussian_noise(images, torch.Generator().manual_seed(0), sigma=0.05, p=1.0)
    stds = (out - images).flatten(1).std(1)
    assert stds.max() < 0.06 and stds.min() < 0.01 and stds.std() > 0.01  # U(0, 0.05) per sample
