"""Mixed precision on the CPU: which dtype each --amp mode picks, the fp16 gradient scaler with
clipping, and a bf16 run through fit, validation and predict (emulated bf16 on CPUs without it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unet_scratch import engine
from unet_scratch.config import TrainConfig
from unet_scratch.engine import amp_dtype, build_model, predict, train_step
from unet_scratch.errors import UserError
from unet_scratch.losses import DiceLoss
from unet_scratch.train import main

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.mark.parametrize("bf16", [True, False], ids=["gpu-with-bf16", "gpu-without-bf16"])
def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert amp_dtype(CUDA, "auto") == (torch.bfloat16 if bf16 else torch.float16)


@pytest.mark.parametrize("fast", [True, False], ids=["cpu-with-bf16", "cpu-without-bf16"])
def test_auto_on_cpu_is_bf16_only_where_it_is_native(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    monkeypatch.setattr(engine, "cpu_has_fast_bf16", lambda: fast)
    assert amp_dtype(CPU, "auto") == (torch.bfloat16 if fast else None)


def test_explicit_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(engine, "cpu_has_fast_bf16", lambda: False)
    for device in (CPU, CUDA, MPS):
        assert amp_dtype(device, "off") is None
        assert amp_dtype(device, "bf16") == torch.bfloat16  # asked for: given, even if emulated
    assert amp_dtype(CUDA, "fp16") == torch.float16 and amp_dtype(MPS, "auto") == torch.float16
    with pytest.raises(UserError, match="--amp fp16 is not supported on the CPU"):
        amp_dtype(CPU, "fp16")


def test_grad_scaler_step_clips_the_unscaled_gradients() -> None:
    """fp16 training scales the loss by S before backward; clipping must see the true gradients
    (unscale first), and the optimiser must step with them."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 1, 3, padding=1)
    x, y = torch.rand(2, 3, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    # the reference: plain fp32 gradients, clipped by hand
    ref = torch.nn.Conv2d(3, 1, 3, padding=1)
    ref.load_state_dict(model.state_dict())
    DiceLoss()(ref(x), y).backward()
    grads = [p.grad.clone() for p in ref.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    clip = 0.1 * norm.item()  # well below the true norm: clipping is active
    expected_grads = [g * clip / norm for g in grads]

    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    train_step(model, x, y, DiceLoss(), optimizer, None, scaler=scaler, grad_clip=clip)
    for p, g, b in zip(model.parameters(), expected_grads, before):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-9)  # clipped true gradients
        torch.testing.assert_close(p.detach(), b - g, rtol=1e-5, atol=1e-7)  # SGD(lr=1) took that step
    assert scaler.get_scale() == 2.0**12  # no overflow: the scale stays


def test_grad_scaler_skips_a_step_whose_gradients_overflow() -> None:
    model = torch.nn.Conv2d(3, 1, 3, padding=1)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    x = torch.rand(2, 3, 8, 8)
    x[0, 0, 0, 0] = float("inf")  # an overflowing activation makes the gradients non-finite
    train_step(model, x, torch.ones(2, 1, 8, 8), DiceLoss(), optimizer, None, scaler=scaler, grad_clip=1.0)
    assert all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before))  # step skipped
    assert scaler.get_scale() == 2.0**11  # and the scale halved


def test_bf16_run_through_fit_validation_and_predict(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[tuple[bool, torch.dtype]] = []  # (training mode, head output dtype)
    real_build = engine.build_model

    def build_with_hook(config: TrainConfig) -> torch.nn.Module:
        model = real_build(config)
        model.head.register_forward_hook(lambda m, i, out: seen.append((m.training, out.dtype)))
        return model  # the weight average is a deep copy: it keeps the hook

    monkeypatch.setattr(engine, "build_model", build_with_hook)
    flags = ["--data", str(synthetic_root), "--out", str(tmp_path), "--train-frames", "1-6", "--val-frames",
             "7-8", "--input-size", "32", "--batch-size", "3", "--epochs", "1", "--amp", "bf16",
             "--device", "cpu", "--keep", "best"]  # fmt: skip
    assert main(flags) == 0
    assert "1 epoch, cpu bf16 autocast, " in capsys.readouterr().out  # the run's first line says so
    assert json.loads((tmp_path / "dice" / "config.json").read_text())["run"]["amp"] == "bfloat16"
    assert (True, torch.bfloat16) in seen and (False, torch.bfloat16) in seen  # training and validation
    assert all(dtype == torch.bfloat16 for _, dtype in seen)

    model = build_model(TrainConfig(input_size=32))
    model.load_state_dict(torch.load(tmp_path / "dice" / "best.pt", weights_only=True)["model"])
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    probs = predict(model, images, torch.bfloat16)
    assert probs.dtype == torch.float32 and probs.shape == (3, 1, 32, 32)
    assert 0 <= probs.min() and probs.max() <= 1
    reference = predict(model, images, None)  # fp32: bf16 keeps ~3 significant digits
    assert (probs - reference).abs().max() < 0.05
