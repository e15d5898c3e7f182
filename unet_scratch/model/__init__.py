"""The ResNet50-UNet: encoder (resnet.py) -> decoder and head (unet.py)."""

from .resnet import Bottleneck, ResNet50Encoder, conv1x1, conv3x3
from .unet import (
    NORMALIZATIONS,
    ConvBNReLU,
    DecoderBlock,
    InputNormalization,
    SegmentationHead,
    UNetDecoder,
    UNetResNet50,
)

__all__ = [
    "NORMALIZATIONS",
    "Bottleneck",
    "ConvBNReLU",
    "DecoderBlock",
    "InputNormalization",
    "ResNet50Encoder",
    "SegmentationHead",
    "UNetDecoder",
    "UNetResNet50",
    "conv1x1",
    "conv3x3",
]
