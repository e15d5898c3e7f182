"""Batched augmentations on tensors, on the training device (no torchvision).

Every function takes ``images (B, C, H, W)`` float in [0, 1] and ``masks (B, 1, H, W)``
float in {0, 1} and a ``torch.Generator`` on the same device, and transforms each sample
independently, image and mask together, so that the pair stays aligned. Nothing here reads a
value back to the host, so a CUDA step never waits.

:func:`augment` applies a named list of them (``TrainConfig.augment``, e.g. ``"flips,rot90"``):

- ``flips``: left-right and up-down flips, p = 0.5 each (the reference recipe);
- ``rot90``: a random multiple of 90 degrees (square inputs);
- ``affine``: random scale (0.75-1.25), rotation (+-20 degrees) and shift (+-10 %), one
  ``grid_sample`` per batch; the image is sampled bilinearly, the mask bilinearly then
  re-binarised at 0.5; areas moved in from outside are black, like the endoscope's border;
- ``color``: brightness, contrast and saturation jitter (+-20 % each), image only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("flips", "rot90", "affine", "color")


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws from U(lo, hi) as a ``(n, 1, 1, 1)`` tensor on ``like``'s device."""
    u = torch.rand(n, 1, 1, 1, device=like.device, generator=generator)
    return lo + (hi - lo) * u


def random_flips(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each sample left-right with probability ``p`` and, independently, up-down.

    The reference recipe's augmentation (RandomHorizontalFlip + RandomVerticalFlip, p = 0.5).
    ``torch.where`` picks per sample between the tensor and its flip, with no host sync.
    """
    b = images.shape[0]
    draws = torch.rand(2, b, 1, 1, 1, device=images.device, generator=generator) < p
    for flip, dim in zip(draws, (-1, -2)):  # horizontal (width), vertical (height)
        images = torch.where(flip, images.flip(dim), images)
        masks = torch.where(flip, masks.flip(dim), masks)
    return images, masks


def random_rot90(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each (square) sample by k * 90 degrees, k uniform in {0, 1, 2, 3}."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError("rot90 needs square inputs")
    k = torch.randint(0, 4, (images.shape[0], 1, 1, 1), device=images.device, generator=generator)
    out_i, out_m = images, masks
    for r in (1, 2, 3):
        out_i = torch.where(k == r, images.rot90(r, (-2, -1)), out_i)
        out_m = torch.where(k == r, masks.rot90(r, (-2, -1)), out_m)
    return out_i, out_m


def random_affine(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.75, 1.25),
    degrees: float = 20.0,
    shift: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random zoom, rotation and shift per sample, via one ``affine_grid``/``grid_sample``."""
    b = images.shape[0]
    s = _uniform(b, *scale, images, generator).view(b)
    angle = _uniform(b, -degrees, degrees, images, generator).view(b) * (math.pi / 180)
    t = _uniform(2 * b, -shift, shift, images, generator).view(b, 2) * 2  # grid units span 2
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s  # output -> input coordinates
    theta = torch.stack(
        [torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(
        masks, grid.to(masks.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return images, (masks > 0.5).to(masks.dtype)


def color_jitter(images: torch.Tensor, generator: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by U(1 - strength, 1 + strength)."""
    b = images.shape[0]
    lo, hi = 1 - strength, 1 + strength
    images = images * _uniform(b, lo, hi, images, generator)  # brightness
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = mean + (images - mean) * _uniform(b, lo, hi, images, generator)  # contrast
    gray = (images * images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    images = gray + (images - gray) * _uniform(b, lo, hi, images, generator)  # saturation
    return images.clamp(0, 1)


def augment(
    images: torch.Tensor, masks: torch.Tensor, names: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the comma-separated augmentations ``names`` (see the module docstring) in order."""
    for name in parse_augment(names):
        if name == "flips":
            images, masks = random_flips(images, masks, generator)
        elif name == "rot90":
            images, masks = random_rot90(images, masks, generator)
        elif name == "affine":
            images, masks = random_affine(images, masks, generator)
        elif name == "color":
            images = color_jitter(images, generator)
    return images, masks


def parse_augment(names: str) -> list[str]:
    """``"flips,rot90"`` -> ``["flips", "rot90"]``; ``"none"`` -> ``[]``; unknown names raise."""
    items = [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in items if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown augmentation {unknown[0]!r}; choose from {', '.join(AUGMENTATIONS)} or none"
        )
    return items
