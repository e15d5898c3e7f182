"""features.py: every stage's output is recorded, the most active channels are the ones drawn,
and the pictures are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from unet_scratch.checkpoint import atomic_torch_save
from unet_scratch.config import TrainConfig
from unet_scratch.engine import build_model
from unet_scratch.features import STAGES, main, most_active, stage_outputs
from unet_scratch.synthetic import make_frame


def test_every_stage_is_recorded_with_its_shape() -> None:
    torch.manual_seed(0)
    outputs, prob = stage_outputs(build_model(TrainConfig()), torch.rand(1, 3, 64, 64))
    shapes = [tuple(o.shape) for o in outputs]
    assert len(shapes) == len(STAGES) == 10
    assert shapes == [(64, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2),
                      (256, 4, 4), (128, 8, 8), (64, 16, 16), (32, 32, 32), (16, 64, 64)]  # fmt: skip
    assert prob.shape == (64, 64) and 0 <= prob.min() and prob.max() <= 1


def test_most_active_channels_by_mean() -> None:
    feature = torch.zeros(5, 2, 2)
    feature[3] = torch.tensor([[0.0, 4.0], [4.0, 4.0]])  # mean 3: the most active
    feature[1] = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # mean 2
    picked = most_active(feature, 2)
    assert [c for c, _ in picked] == [3, 1]
    np.testing.assert_allclose(picked[0][1], [[0, 1], [1, 1]])  # each map scaled to [0, 1]
    np.testing.assert_allclose(picked[1][1], [[0, 0.5], [1, 0.5]])


def test_cli_writes_both_pictures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig(input_size=64)
    atomic_torch_save(
        {"model": build_model(config).state_dict(), "config": config.to_dict()}, run / "best.pt"
    )
    tifffile.imwrite(tmp_path / "f.tif", make_frame(3)[0], photometric="minisblack", planarconfig="contig")
    assert (
        main(["--run", str(run), str(tmp_path / "f.tif"), "--out", str(tmp_path / "out"), "--channels", "2"])
        == 0
    )
    from PIL import Image

    for name in ("features.png", "prediction.png"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.size[0] > 300
