"""Segment images and videos with a trained run: ``python predict.py --run runs/combined INPUT...``."""

import sys

from unet_scratch.predict import main

if __name__ == "__main__":
    sys.exit(main())
