"""UNet decoder and segmentation head on top of the ResNet50 encoder.

Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation"
(MICCAI 2015): the decoder climbs back up the encoder's pyramid, doubling the resolution at
every block and concatenating the encoder feature of the same resolution (the "skip").

Contract between the three parts::

    encoder(x)  -> [stem /2, layer1 /4, layer2 /8, layer3 /16, layer4 /32]
    decoder(fs) -> (B, 16, H, W)
    head(d)     -> (B, num_classes, H, W) logits (no activation: losses take logits)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import ResNet50Encoder, conv3x3


class ConvBNReLU(nn.Sequential):
    """conv3x3 => BN => ReLU, keeping the spatial size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            conv3x3(in_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """Nearest 2x upsample, concat the skip (if any), then (conv3x3 => BN => ReLU) * 2.

    ``x (B, in_channels, h, w)`` and ``skip (B, skip_channels, 2h, 2w)``
    -> ``(B, out_channels, 2h, 2w)``.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels + skip_channels, out_channels)
        self.conv2 = ConvBNReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """Five :class:`DecoderBlock` s from ``/32`` back to full resolution.

    ``features`` are the encoder's five maps (shallow to deep); the decoder starts from the
    deepest one and uses the other four as skips, deepest first. The last block has no skip:
    at full resolution the encoder has no feature map (its first one, the stem, is at ``/2``).
    ``skips=False`` drops all four (an ablation: what the skips carry). Output:
    ``(B, decoder_channels[-1], H, W)``; :meth:`forward` with ``return_all=True`` also returns
    every block's output (deep supervision, feature pictures).
    """

    def __init__(
        self,
        encoder_channels: tuple[int, ...] = (64, 256, 512, 1024, 2048),
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        skips: bool = True,
    ) -> None:
        super().__init__()
        if len(encoder_channels) != 5 or len(decoder_channels) != 5:
            raise ValueError("UNetDecoder expects 5 encoder and 5 decoder channel counts")
        self.skips = skips
        # block i takes the previous block's output and the skip of the matching resolution
        in_channels = [encoder_channels[-1], *decoder_channels[:-1]]
        skip_channels = (
            [*reversed(encoder_channels[:-1]), 0] if skips else [0] * 5
        )  # 1024, 512, 256, 64, none
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o) for i, s, o in zip(in_channels, skip_channels, decoder_channels)
        )

    def forward(self, features: list[torch.Tensor], return_all: bool = False):  # noqa: ANN201
        *skips, x = features
        skips = skips[::-1] + [None] if self.skips else [None] * 5  # deepest skip first
        outputs = []
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip)
            outputs.append(x)
        return (x, outputs) if return_all else x


NORMALIZATIONS = ("none", "imagenet", "image")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputNormalization(nn.Module):
    """Fixed (not learned) input scaling, part of the model so training and inference agree.

    ``x (B, C, H, W)`` in [0, 1] ->  same shape:

    - ``none``: unchanged;
    - ``imagenet``: ``(x - mean) / std`` with ImageNet's per-channel constants (C = 3);
    - ``image``: each image's channels standardised by their own mean and standard deviation
      over ``H x W``, which removes a frame's overall brightness and contrast.

    The constants are non-persistent buffers, so the state_dict keeps torchvision's keys.
    """

    def __init__(self, mode: str = "none") -> None:
        super().__init__()
        if mode not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {mode!r}")
        self.mode = mode
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "imagenet":
            return (x - self.mean) / self.std
        if self.mode == "image":
            std, mean = torch.std_mean(x, dim=(2, 3), keepdim=True)
            return (x - mean) / (std + 1e-3)  # eps: a flat channel stays finite
        return x

    def extra_repr(self) -> str:
        return self.mode


class SegmentationHead(nn.Conv2d):
    """conv3x3 from the decoder's channels to ``num_classes`` logits, full resolution."""

    def __init__(self, in_channels: int = 16, num_classes: int = 1) -> None:
        super().__init__(in_channels, num_classes, kernel_size=3, padding=1)


class UNetResNet50(nn.Module):
    """ResNet50 encoder + UNet decoder + head: ``(B, C, H, W)`` -> ``(B, num_classes, H, W)``.

    The input is an RGB batch in [0, 1]; :class:`InputNormalization` scales it first.
    H and W must be multiples of 32 (the encoder halves the resolution five times and the
    decoder doubles it back). 32,521,105 parameters at the defaults.

    Options that leave the defaults' weights and keys untouched: ``drop_path`` (stochastic
    depth in the encoder's residual branches), ``head_dropout`` (channel dropout before the
    head); both act in training only. ``skips=False`` builds the decoder without skip
    connections. ``deep_supervision=True`` adds a 1x1-conv head to decoder blocks 1-3 (at
    ``/8``, ``/4``, ``/2``); in training mode :meth:`forward` then returns
    ``(logits, [aux logits at /8, /4, /2])``, in eval mode the logits alone.
    ``head_prior`` in (0, 1) starts the head(s) at probability ~``head_prior`` on every pixel
    (weights N(0, 0.01^2), bias logit(prior)); 0 keeps the kaiming head.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        zero_init_residual: bool = False,
        normalization: str = "none",
        skips: bool = True,
        drop_path: float = 0.0,
        head_dropout: float = 0.0,
        deep_supervision: bool = False,
        head_prior: float = 0.0,
    ) -> None:
        super().__init__()
        self.normalize = InputNormalization(normalization)
        self.encoder = ResNet50Encoder(
            in_channels, zero_init_residual=zero_init_residual, drop_path=drop_path
        )
        self.decoder = UNetDecoder(self.encoder.out_channels, skips=skips)
        self.dropout = nn.Dropout2d(head_dropout)  # no parameters: the keys stay the same
        self.head = SegmentationHead(16, num_classes)
        # Decoder initialisation: kaiming for convs as in the encoder, BN at (1, 0).
        for m in [*self.decoder.modules(), self.head]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.aux_heads = None
        if deep_supervision:  # built after the rest, so the other weights are those of the plain model
            self.aux_heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in (128, 64, 32))
        if head_prior:
            # RetinaNet's prior initialisation (Lin et al., 2017, section 4.1): tiny head weights
            # and a bias of logit(prior), so that every pixel starts at probability ~prior
            # instead of at the logits (std ~4 on real frames) that fan-out kaiming gives a
            # 1-channel head. Last, so every other weight is that of the model without it.
            for head in [self.head, *(self.aux_heads or [])]:
                nn.init.normal_(head.weight, std=0.01)
                nn.init.constant_(head.bias, math.log(head_prior / (1 - head_prior)))

    def forward(self, x: torch.Tensor):  # noqa: ANN201 - a tensor, or (tensor, list) under deep supervision
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(
                f"input height and width must be multiples of 32, got {h}x{w} (resize to e.g. 128x128)"
            )
        features = self.encoder(self.normalize(x))
        if self.aux_heads is None or not self.training:
            return self.head(self.dropout(self.decoder(features)))
        d, outputs = self.decoder(features, return_all=True)
        aux = [head(o) for head, o in zip(self.aux_heads, outputs[1:4])]
        return self.head(self.dropout(d)), aux
