"""Evaluate trained runs on the test frames: ``python evaluate.py`` (see ``--help``)."""

import sys

from unet_scratch.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
