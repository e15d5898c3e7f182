"""Batched augmentations on tensors, on the training device (no torchvision).

Every function takes ``images (B, C, H, W)`` and ``masks (B, 1, H, W)`` and a
``torch.Generator`` on the same device, and transforms each sample independently, image and
mask together, so that the pair stays aligned.
"""

from __future__ import annotations

import torch


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
