"""Segment images and videos with a trained run: ``python predict.py --run runs/combined INPUT...``."""

from unet_scratch.errors import exit_with
from unet_scratch.predict import main

if __name__ == "__main__":
    exit_with(main())
