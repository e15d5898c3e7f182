"""From an image of any size to a mask of that size: the preparation a trained model needs.

A model trained by this project sees ``S x S`` frames (``config.input_size``), resized from the
original with Pillow's bicubic filter (data.py). To segment an image of any size, it is prepared
the same way, the model's probabilities are resized back to the image's own height and width
(bilinear), and only then thresholded. evaluate.py ``--full-res`` and predict.py share this.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data import resize_image


def prepare(image: np.ndarray, size: int) -> torch.Tensor:
    """``image (H, W, 3)`` RGB uint8 -> ``(3, size, size)`` uint8, exactly as training resized it."""
    return torch.from_numpy(np.ascontiguousarray(resize_image(image, size).transpose(2, 0, 1)))


def to_size(prob: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Probabilities ``(N, 1, S, S)`` -> ``(N, 1, height, width)``, bilinear, in [0, 1].

    Resizing probabilities (not a thresholded mask) keeps the boundary smooth: the 0.5
    contour of the resized map is where the model's own boundary lies, between its pixels.
    """
    if prob.shape[-2:] == (height, width):
        return prob
    out = F.interpolate(prob.float(), size=(height, width), mode="bilinear", align_corners=False)
    return out.clamp_(0, 1)
