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
- ``color``: brightness, contrast and saturation jitter (+-20 % each), image only;
- ``color-wide``: the same jitter at +-40 %, to use instead of ``color`` (given both, both
  apply): the polyps of some videos are darker than those of any training video
  (docs/RESULTS.md, "An eighth round").

Stronger, nnU-Net-style options (Isensee et al., "nnU-Net", Nature Methods 2021, whose 2D
pipeline they follow in kind and range), each applied to a sample with its own probability:

- ``affine-wide``: scale 0.7-1.4 and rotation +-45 degrees (with ``rot90``: any angle), shift +-10 %;
- ``gamma``: ``x ** g``, g in 0.7-1.5 (p 0.3);
- ``blur``: Gaussian blur, sigma 0.5-1.0 pixel (p 0.2);
- ``noise``: additive Gaussian noise, sigma 0-0.05 of the [0, 1] range (p 0.15);
- ``lowres``: simulated low resolution, nearest-neighbour sampling on a grid 1-2x coarser (p 0.25).

Mixing samples of the batch (after the per-sample ones; the masks follow the pixels):

- ``copypaste``: the polyp of another sample pasted onto this one (p 0.5; Ghiasi et al.,
  "Simple Copy-Paste is a Strong Data Augmentation Method for Instance Segmentation", CVPR 2021);
- ``cutmix``: a box of another sample, a quarter to half of the frame, pasted in (p 0.5; Yun et
  al., "CutMix", ICCV 2019; French et al. 2020 for segmentation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = (
    "flips", "rot90", "affine", "color",
    "color-wide", "affine-wide", "gamma", "blur", "noise", "lowres", "copypaste", "cutmix",
)  # fmt: skip


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


def _chosen(n: int, p: float, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``(n, 1, 1, 1)`` booleans, each True with probability ``p``."""
    return torch.rand(n, 1, 1, 1, device=like.device, generator=generator) < p


def random_gamma(
    images: torch.Tensor, generator: torch.Generator, gamma: tuple[float, float] = (0.7, 1.5), p: float = 0.3
) -> torch.Tensor:
    """``x ** g`` per sample (darker or brighter mid-tones, same black and white), image only."""
    b = images.shape[0]
    g = _uniform(b, *gamma, images, generator)
    return torch.where(_chosen(b, p, images, generator), images.clamp_min(1e-6) ** g, images)


def gaussian_blur(
    images: torch.Tensor, generator: torch.Generator, sigma: tuple[float, float] = (0.5, 1.0), p: float = 0.2
) -> torch.Tensor:
    """A separable Gaussian blur with a per-sample sigma (7-tap kernels), image only."""
    b, c, h, w = images.shape
    s = _uniform(b, *sigma, images, generator).view(b, 1)
    taps = torch.arange(-3, 4, device=images.device, dtype=images.dtype).view(1, 7)
    kernel = torch.exp(-0.5 * (taps / s) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B * C, 7)
    x = images.reshape(1, b * c, h, w)  # one group per (sample, channel)
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), kernel.view(b * c, 1, 1, 7), groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), kernel.view(b * c, 1, 7, 1), groups=b * c)
    return torch.where(_chosen(b, p, images, generator), x.view(b, c, h, w), images)


def gaussian_noise(
    images: torch.Tensor, generator: torch.Generator, sigma: float = 0.05, p: float = 0.15
) -> torch.Tensor:
    """Additive Gaussian noise with a per-sample sigma in [0, ``sigma``], image only."""
    b = images.shape[0]
    s = _uniform(b, 0.0, sigma, images, generator)
    noise = torch.randn(images.shape, device=images.device, generator=generator, dtype=images.dtype)
    return torch.where(_chosen(b, p, images, generator), (images + s * noise).clamp(0, 1), images)


def simulate_low_resolution(
    images: torch.Tensor, generator: torch.Generator, zoom: tuple[float, float] = (1.0, 2.0), p: float = 0.25
) -> torch.Tensor:
    """Each chosen sample seen at 1/z of its resolution (z per sample): every pixel takes the
    value of its cell's centre on a grid z times coarser (nearest-neighbour), image only."""
    b, _, h, w = images.shape
    z = _uniform(b, *zoom, images, generator).view(b, 1, 1)
    # continuous coordinates (pixel i spans [i, i + 1)): a pixel's centre falls in coarse cell k,
    # which shows the pixel at the cell's start, k z; z = 1 gives every pixel itself
    ys = torch.arange(h, device=images.device, dtype=images.dtype).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=images.device, dtype=images.dtype).view(1, 1, w) + 0.5
    cy = torch.floor(torch.floor(ys / z) * z) + 0.5
    cx = torch.floor(torch.floor(xs / z) * z) + 0.5
    grid = torch.stack([(2 * cx / w - 1).expand(b, h, w), (2 * cy / h - 1).expand(b, h, w)], -1)
    low = F.grid_sample(images, grid, mode="nearest", align_corners=False)
    return torch.where(_chosen(b, p, images, generator), low, images)


def copy_paste(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the polyp pixels of another sample of the batch (a random derangement) over this
    one's, where they lie in that sample; the mask becomes the union."""
    b = images.shape[0]
    if b < 2:
        return images, masks
    shift = torch.randint(1, b, (1,), device=images.device, generator=generator)
    source = (torch.arange(b, device=images.device) + shift) % b  # never the sample itself
    paste = (masks[source] > 0.5) & _chosen(b, p, images, generator)
    return torch.where(paste, images[source], images), torch.where(paste, masks[source], masks)


def cutmix(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    area: tuple[float, float] = (0.25, 0.5),
    p: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random box (``area`` of the frame, the frame's aspect) of each chosen sample
    with the same box of another sample, image and mask alike."""
    b, _, h, w = images.shape
    if b < 2:
        return images, masks
    shift = torch.randint(1, b, (1,), device=images.device, generator=generator)
    source = (torch.arange(b, device=images.device) + shift) % b
    side = _uniform(b, *area, images, generator).sqrt()  # box height / h = box width / w
    top = _uniform(b, 0, 1, images, generator) * (1 - side)
    left = _uniform(b, 0, 1, images, generator) * (1 - side)
    ys = (torch.arange(h, device=images.device) + 0.5).view(1, 1, h, 1) / h
    xs = (torch.arange(w, device=images.device) + 0.5).view(1, 1, 1, w) / w
    box = (ys >= top) & (ys < top + side) & (xs >= left) & (xs < left + side)
    box = box & _chosen(b, p, images, generator)
    return torch.where(box, images[source], images), torch.where(box, masks[source], masks)


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
        elif name == "color-wide":
            images = color_jitter(images, generator, strength=0.4)
        elif name == "affine-wide":
            images, masks = random_affine(images, masks, generator, scale=(0.7, 1.4), degrees=45.0)
        elif name == "gamma":
            images = random_gamma(images, generator)
        elif name == "blur":
            images = gaussian_blur(images, generator)
        elif name == "noise":
            images = gaussian_noise(images, generator)
        elif name == "lowres":
            images = simulate_low_resolution(images, generator)
        elif name == "copypaste":
            images, masks = copy_paste(images, masks, generator)
        elif name == "cutmix":
            images, masks = cutmix(images, masks, generator)
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
