"""unet-scratch: a hand-written ResNet50-UNet for polyp segmentation, in plain PyTorch."""

from .config import TrainConfig
from .data import PolypDataset, load_frames, parse_frames
from .errors import UserError
from .losses import LOSSES, CombinedLoss, DiceLoss, FocalLoss, JaccardLoss, build_loss
from .model import ResNet50Encoder, UNetResNet50

__version__ = "0.1.0"

__all__ = [
    "LOSSES",
    "CombinedLoss",
    "DiceLoss",
    "FocalLoss",
    "JaccardLoss",
    "PolypDataset",
    "ResNet50Encoder",
    "TrainConfig",
    "UNetResNet50",
    "UserError",
    "build_loss",
    "load_frames",
    "parse_frames",
]
