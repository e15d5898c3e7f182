"""Train the ResNet50-UNet: ``python train.py --loss jaccard`` (see ``--help``)."""

import sys

from unet_scratch.train import main

if __name__ == "__main__":
    sys.exit(main())
