"""progress.py: durations, counts and the progress line, against values worked out by hand."""

from __future__ import annotations

import pytest

from unet_scratch import progress
from unet_scratch.progress import Progress, counted, format_duration


@pytest.mark.parametrize(
    "seconds, shown",
    [
        (0, "0:00"),
        (59.4, "0:59"),
        (59.6, "1:00"),  # rounded to the second first
        (75, "1:15"),
        (3599, "59:59"),
        (3600, "1:00:00"),  # an hour is h:mm:ss, not 60:00
        (3725, "1:02:05"),
        (7322, "2:02:02"),  # the minutes past the hour, not all of them
        (36000, "10:00:00"),
    ],
)
def test_durations(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_counts() -> None:
    assert [counted(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]


def test_the_progress_line_counts_images_per_second_of_the_images_done(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """6 of 10 inputs handled, 4 of them images written, 2 s in: 2.0 img/s (4 / 2, not 6 / 2)."""
    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    bar = Progress(10, "predict", enabled=True)
    now[0] = 102.0
    bar.update(6, 4)
    assert capsys.readouterr().err == "\rpredict [############        ] 6/10   2.0 img/s"
    assert not Progress(10, "predict", enabled=False).enabled  # off the terminal: silent
