"""Train the ResNet50-UNet: ``python train.py --loss jaccard`` (see ``--help``)."""

from unet_scratch.errors import exit_with
from unet_scratch.train import main

if __name__ == "__main__":
    exit_with(main())
