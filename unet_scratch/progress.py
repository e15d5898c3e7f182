"""Console output of a run: the in-epoch progress bar, durations and counts."""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"`` (progress lines and result tables)."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def counted(n: int, noun: str) -> str:
    """``counted(1, "image")`` -> ``"1 image"``, ``counted(3, "image")`` -> ``"3 images"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


class Progress:
    """A one-line, self-overwriting progress indicator, shown only on a terminal."""

    def __init__(self, total: int, label: str, enabled: bool | None = None) -> None:
        self.total, self.label, self.start = total, label, time.perf_counter()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, done: int, images: int) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        rate = images / elapsed if elapsed > 0 else 0.0
        bar = "#" * int(20 * done / self.total)
        print(
            f"\r{self.label} [{bar:<20}] {done}/{self.total} {rate:5.1f} img/s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.enabled:
            print("\r" + " " * 70 + "\r", end="", file=sys.stderr, flush=True)
