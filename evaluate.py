"""Evaluate trained runs on the test frames: ``python evaluate.py`` (see ``--help``)."""

from unet_scratch.errors import exit_with
from unet_scratch.evaluate import main

if __name__ == "__main__":
    exit_with(main())
