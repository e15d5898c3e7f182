"""The ResNet50-UNet: parameter counts, torchvision layout, shapes at every stage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from unet_scratch import ResNet50Encoder, UNetResNet50
from unet_scratch.model import Bottleneck, DecoderBlock, InputNormalization, UNetDecoder
from unet_scratch.model.resnet import drop_path
from unet_scratch.summary import block_steps, stage_table
from unet_scratch.summary import main as summary_main

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_resnet50_encoder_state_dict.json"


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def model() -> UNetResNet50:
    torch.manual_seed(0)
    return UNetResNet50().eval()


def test_parameter_counts(model: UNetResNet50) -> None:
    assert n_params(model.encoder) == 23_508_032
    assert n_params(model.decoder) == 9_012_928
    assert n_params(model.head) == 145
    assert n_params(model) == 32_521_105


def test_encoder_state_dict_is_torchvision_resnet50_without_fc(model: UNetResNet50) -> None:
    reference = json.loads(FIXTURE.read_text())
    expected = {k: tuple(v) for k, v in reference["state_dict"].items()}
    got = {k: tuple(v.shape) for k, v in model.encoder.state_dict().items()}
    assert list(got) == list(expected)  # same keys, same order
    assert got == expected
    assert n_params(model.encoder) == reference["num_parameters_without_fc"]


def test_torchvision_shaped_checkpoint_loads_strict() -> None:
    reference = json.loads(FIXTURE.read_text())["state_dict"]
    g = torch.Generator().manual_seed(1)
    state = {
        k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(v, generator=g)
        for k, v in reference.items()
    }
    encoder = ResNet50Encoder()
    encoder.load_state_dict(state, strict=True)
    assert torch.equal(encoder.layer3[5].conv2.weight, state["layer3.5.conv2.weight"])


def test_v15_stride_on_the_3x3(model: UNetResNet50) -> None:
    block = model.encoder.layer2[0]
    assert isinstance(block, Bottleneck)
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert block.downsample[0].stride == (2, 2)
    assert [len(getattr(model.encoder, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert not hasattr(model.encoder, "fc") and not hasattr(model.encoder, "avgpool")


@pytest.mark.parametrize("h, w", [(128, 128), (64, 64), (96, 96), (96, 160)])
def test_feature_and_logit_shapes(model: UNetResNet50, h: int, w: int) -> None:
    x = torch.randn(2, 3, h, w)
    with torch.inference_mode():
        features = model.encoder(x)
        logits = model(x)
    expected = [(64, 2), (256, 4), (512, 8), (1024, 16), (2048, 32)]
    assert [tuple(f.shape) for f in features] == [(2, c, h // s, w // s) for c, s in expected]
    assert logits.shape == (2, 1, h, w)
    assert logits.dtype == torch.float32


def test_decoder_block_shapes() -> None:
    decoder = UNetDecoder()
    sizes = [(256, 8), (128, 16), (64, 32), (32, 64), (16, 128)]
    x = torch.randn(1, 2048, 4, 4)
    skips = [torch.randn(1, c, s, s) for c, s in [(1024, 8), (512, 16), (256, 32), (64, 64)]] + [None]
    for block, skip, (c, s) in zip(decoder.blocks, skips, sizes):
        x = block(x, skip)
        assert x.shape == (1, c, s, s)
    assert isinstance(decoder.blocks[4], DecoderBlock)
    assert decoder.blocks[4].conv1[0].in_channels == 32  # the last block has no skip


def test_input_not_multiple_of_32_is_a_clear_error(model: UNetResNet50) -> None:
    for h, w in ((100, 100), (64, 100), (100, 64)):  # the width is checked as well as the height
        with pytest.raises(ValueError, match=f"multiples of 32.*{h}x{w}"):
            model(torch.randn(1, 3, h, w))


@pytest.mark.parametrize(
    "name, fan_out",
    [
        ("encoder.layer1.0.conv3.weight", 256),  # 64 -> 256, 1x1: fan_in 64, fan_out 256
        ("encoder.layer4.0.conv1.weight", 512),  # 1024 -> 512, 1x1: fan_in 1024
        ("decoder.blocks.0.conv1.0.weight", 256 * 9),  # 3072 -> 256, 3x3: fan_in 3072 * 9
        ("encoder.conv1.weight", 64 * 49),  # 3 -> 64, 7x7: fan_in 3 * 49
    ],
)
def test_kaiming_initialisation_is_fan_out_like_torchvision(name: str, fan_out: int) -> None:
    # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), std sqrt(2 / fan_out);
    # each layer has fan_in != fan_out, so a fan_in initialisation is 2x-30x off
    torch.manual_seed(0)
    w = dict(UNetResNet50().named_parameters())[name]
    assert w.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.03)
    assert abs(w.mean().item()) < 0.1 * w.std().item()


def test_norm_layers_start_at_identity_and_init_is_seeded() -> None:
    torch.manual_seed(0)
    m = UNetResNet50()
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert len(bns) == 53 + 10  # 53 in the encoder, 2 per decoder block
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)
    assert torch.all(m.head.bias == 0)
    torch.manual_seed(0)
    again = UNetResNet50()
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values()))


def reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The ResNet50-UNet written out with torch.nn.functional from a state_dict alone: an
    independent re-computation of what UNetResNet50 should do in eval mode."""

    def bn(h: torch.Tensor, p: str) -> torch.Tensor:
        w, b, mean, var = (sd[f"{p}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
        return (h - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5) * w.view(
            1, -1, 1, 1
        ) + b.view(1, -1, 1, 1)

    h = F.relu(bn(F.conv2d(x, sd["encoder.conv1.weight"], stride=2, padding=3), "encoder.bn1"))
    features = [h]
    h = F.max_pool2d(h, kernel_size=3, stride=2, padding=1)
    for layer, (blocks, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 2)), start=1):
        for b in range(blocks):
            p, s = f"encoder.layer{layer}.{b}", stride if b == 0 else 1
            out = F.relu(bn(F.conv2d(h, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
            out = F.relu(bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=s, padding=1), f"{p}.bn2"))
            out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            if b == 0:  # the projection shortcut, strided like the 3x3 (v1.5)
                h = bn(F.conv2d(h, sd[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1")
            h = F.relu(out + h)
        features.append(h)
    d = features[4]
    for i, skip in enumerate([features[3], features[2], features[1], features[0], None]):
        d = F.interpolate(d, scale_factor=2, mode="nearest")
        if skip is not None:
            d = torch.cat([d, skip], dim=1)  # upsampled decoder channels first, then the skip's
        for c in (1, 2):
            p = f"decoder.blocks.{i}.conv{c}"
            d = F.relu(bn(F.conv2d(d, sd[f"{p}.0.weight"], padding=1), f"{p}.1"))
    return F.conv2d(d, sd["head.weight"], sd["head.bias"], padding=1)


def test_forward_equals_a_functional_recomputation_from_its_own_weights() -> None:
    torch.manual_seed(0)
    model = UNetResNet50().double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # BatchNorm statistics and affine terms away from (0, 1), a non-zero head bias
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
        model.head.bias.fill_(0.3)
    x = torch.rand(2, 3, 64, 96, generator=g, dtype=torch.float64)
    with torch.no_grad():
        got = model(x)
        expected = reference_forward(model.state_dict(), x)
    assert got.shape == (2, 1, 64, 96)
    assert expected.abs().max() > 1e-3  # a non-trivial output
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_zero_init_residual() -> None:
    m = UNetResNet50(zero_init_residual=True)
    assert all(
        torch.all(b.bn3.weight == 0) for layer in ["layer1", "layer4"] for b in getattr(m.encoder, layer)
    )


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    m = UNetResNet50()
    m(torch.randn(2, 3, 64, 64)).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_summary_prints_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert summary_main(["--input-size", "64"]) == 0
    out = capsys.readouterr().out
    for text in ["23,508,032", "9,012,928", "32,521,105", "(1, 2048, 2, 2)", "(1, 1, 64, 64)"]:
        assert text in out
    assert "2048 + skip 1024 = 3072" in out and "32 (no skip)" in out
    assert summary_main(["--input-size", "100"]) == 2


def test_summary_rows_add_up_and_name_their_skips(capsys: pytest.CaptureFixture[str]) -> None:
    """The table's rows add up to the model (the stem's row holds conv1 and bn1: 9,408 + 128),
    each decoder block names the encoder stage its skip comes from, and --skips none is the
    model without them."""
    stages = stage_table(UNetResNet50(), 64)
    assert stages[0].parameters == 7 * 7 * 3 * 64 + 2 * 64
    assert sum(s.parameters for s in stages) == 32_521_105
    skips = [s.inputs[1][0] for s in stages if s.part == "decoder" and len(s.inputs) == 2]
    assert skips == ["skip from layer3", "skip from layer2", "skip from layer1", "skip from stem"]
    assert summary_main(["--input-size", "64"]) == 0
    total_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("total "))
    assert "32,521,105" in total_row
    assert summary_main(["--input-size", "64", "--skips", "none"]) == 0
    out = capsys.readouterr().out
    decoder = UNetDecoder(skips=False)
    assert "2048 (no skip)" in out and f"{sum(p.numel() for p in decoder.parameters()):,}" in out


def test_summary_flops_concatenations_and_receptive_fields() -> None:
    stages = {s.name.split()[0]: s for s in stage_table(UNetResNet50(), 128)}
    block0 = stages["decoder.blocks.0"]
    assert [shape for _, shape in block0.inputs] == [(1, 2048, 8, 8), (1, 1024, 8, 8)]  # upsampled, skip
    assert block0.in_channels == 3072 and block0.output == (1, 256, 8, 8)
    # a 3x3 convolution costs 2 * 9 * C_in * C_out FLOPs per output pixel (8 x 8 here)
    assert block0.flops == 2 * 9 * (3072 * 256 + 256 * 256) * 64
    assert stages["head"].flops == 2 * 9 * 16 * 1 * 128 * 128
    assert stages["decoder.blocks.4"].inputs[1:] == []  # the last block has no skip
    assert sum(s.flops for s in stages.values()) == pytest.approx(5.316e9, rel=1e-3)
    # ResNet50 v1.5: 7x7/2 stem, 3x3/2 pool, then each 3x3 adds 2 * (the spacing of its input:
    # the strided first 3x3 of layers 2-4 reads at the previous stage's)
    fields = [stages[n].receptive_field for n in ("encoder.stem", "encoder.maxpool")]
    fields += [stages[f"encoder.layer{i}"].receptive_field for i in range(1, 5)]
    assert fields == [7, 11, 35, 91, 267, 427]


@pytest.mark.parametrize("stage, expected", [("layer1", 35), ("layer2", 91)])
def test_receptive_field_is_what_the_gradient_reaches(stage: str, expected: int) -> None:
    """Independent check: the input pixels that get a gradient from one output pixel of a stage,
    in a network where nothing can cancel (positive weights and inputs, identity BatchNorm) and
    nothing routes the gradient to one pixel (the max-pool becomes an average over the same window)."""
    encoder = ResNet50Encoder().eval()
    encoder.maxpool = torch.nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    x = torch.ones(1, 3, 160, 160, requires_grad=True)
    f = dict(zip(["stem", "layer1", "layer2", "layer3", "layer4"], encoder(x)))[stage]
    f[0, 0, f.shape[2] // 2, f.shape[3] // 2].backward()
    rows = (x.grad[0].abs().sum(0).sum(1) > 0).nonzero()
    assert rows.max().item() - rows.min().item() + 1 == expected


def test_diagram_is_drawn_from_the_model(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert summary_main(["--input-size", "64", "--diagram", str(tmp_path / "u.png")]) == 0
    from PIL import Image

    with Image.open(tmp_path / "u.png") as im:
        assert im.size[0] > 1000 and im.size[1] > 500


def test_the_blocks_picture_is_read_from_the_model(tmp_path: Path) -> None:
    """Inside layer3's first bottleneck and decoder block 0: each step's parameters in closed form
    (k*k*C_in*C_out + 2*C_out for conv + BN), the steps together are the whole block (nothing left
    out or counted twice), and the shapes are those of a forward pass (v1.5: the 3x3 strides)."""
    model = UNetResNet50()
    for size in (128, 64):
        steps = {k: {s.name: s for s in v} for k, v in block_steps(model, size).items()}
        b, d, g = steps["bottleneck"], steps["decoder"], size // 8  # layer3 reads layer2 at 1/8
        assert [(n, b[n].output) for n in b] == [
            ("input", (1, 512, g, g)), ("conv1", (1, 256, g, g)), ("conv2", (1, 256, g // 2, g // 2)),
            ("conv3", (1, 1024, g // 2, g // 2)), ("downsample", (1, 1024, g // 2, g // 2)),
            ("add", (1, 1024, g // 2, g // 2)),
        ]  # fmt: skip
        assert [b[n].parameters for n in ("conv1", "conv2", "conv3", "downsample")] == [
            512 * 256 + 2 * 256, 9 * 256 * 256 + 2 * 256, 256 * 1024 + 2 * 1024, 512 * 1024 + 2 * 1024,
        ]  # fmt: skip
        assert b["conv2"].what == "conv 3x3 stride 2, 256 -> 256, BN, ReLU"
        assert b["conv3"].what == "conv 1x1, 256 -> 1024, BN"  # no ReLU before the addition
        whole = sum(p.numel() for p in model.encoder.layer3[0].parameters())
        assert sum(s.parameters for s in b.values()) == whole
        h = size // 32
        assert [(n, d[n].output) for n in d] == [
            ("input", (1, 2048, h, h)), ("upsample", (1, 2048, 2 * h, 2 * h)),
            ("skip", (1, 1024, 2 * h, 2 * h)), ("concatenate", (1, 3072, 2 * h, 2 * h)),
            ("conv1", (1, 256, 2 * h, 2 * h)), ("conv2", (1, 256, 2 * h, 2 * h)),
        ]  # fmt: skip
        assert d["conv1"].parameters == 9 * 3072 * 256 + 2 * 256
        whole = sum(p.numel() for p in model.decoder.blocks[0].parameters())
        assert sum(s.parameters for s in d.values()) == whole
    pytest.importorskip("matplotlib")
    assert summary_main(["--input-size", "64", "--blocks", str(tmp_path / "blocks.png")]) == 0
    from PIL import Image

    with Image.open(tmp_path / "blocks.png") as im:
        assert im.size[0] > 1000 and im.size[1] > 500


def test_input_normalization_modes() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    assert torch.equal(InputNormalization("none")(x), x)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    # the constants are stored in float32: equal to 1e-6
    assert torch.allclose(InputNormalization("imagenet").double()(x), (x - mean) / std, rtol=1e-6, atol=1e-6)
    z = InputNormalization("image")(x)
    assert torch.allclose(z.mean(dim=(2, 3)), torch.zeros(2, 3, dtype=torch.float64), atol=1e-12)
    # std + 1e-3 in the denominator: unit std up to that epsilon
    assert torch.allclose(z.std(dim=(2, 3)), torch.full((2, 3), 1.0, dtype=torch.float64), atol=0.02)
    # closed form: a checkerboard of 0.2 and 0.6 has mean 0.4 and (unbiased) std 0.2 * sqrt(64/63)
    board = 0.2 + 0.4 * ((torch.arange(8)[:, None] + torch.arange(8)) % 2).double()
    expected = (board - 0.4) / (0.2 * math.sqrt(64 / 63) + 1e-3)
    torch.testing.assert_close(InputNormalization("image")(board.expand(1, 3, 8, 8))[0, 1], expected)
    flat = InputNormalization("image")(torch.full((1, 3, 8, 8), 0.7))
    assert torch.equal(flat, torch.zeros_like(flat))  # a flat channel stays finite
    with pytest.raises(ValueError, match="none, imagenet, image"):
        InputNormalization("zscore")


def test_image_normalization_ignores_brightness_and_contrast() -> None:
    torch.manual_seed(0)
    m = UNetResNet50(normalization="image").eval().double()
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64) * 0.5
    scale = torch.tensor([1.5, 0.8, 1.2], dtype=torch.float64).view(1, 3, 1, 1)
    shift = torch.tensor([0.1, -0.05, 0.2], dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        out, out_affine = m(x), m(x * scale + shift)
    # equal up to the 1e-3 epsilon's share of each channel's std
    assert torch.allclose(out, out_affine, atol=1e-2 * out.abs().max().item())
    torch.manual_seed(0)  # the same weights without the normalisation: a different output
    plain = UNetResNet50(normalization="none").eval().double()
    with torch.no_grad():
        assert not torch.allclose(out, plain(x), atol=1e-3)


def test_normalization_keeps_the_state_dict_keys() -> None:
    plain, norm = UNetResNet50().state_dict(), UNetResNet50(normalization="imagenet").state_dict()
    assert list(plain) == list(norm)


# ----------------------------------------------------------------------------- levers


def test_drop_path_drops_whole_samples_and_keeps_the_mean() -> None:
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 3, 3)
    out = drop_path(x, 0.3, training=True)
    per_sample = out.flatten(1)
    dropped = (per_sample == 0).all(1)
    assert ((per_sample == 0) | (per_sample == 1 / 0.7)).all()  # whole samples, kept ones rescaled
    assert (per_sample[~dropped] == 1 / 0.7).all()
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert out.mean().item() == pytest.approx(1.0, abs=0.05)  # the expectation is unchanged
    assert torch.equal(drop_path(x, 0.3, training=False), x) and torch.equal(drop_path(x, 0.0, True), x)


def test_a_dropped_block_passes_its_input_on() -> None:
    """Stochastic depth drops the residual *branch*: a dropped sample leaves an identity-shortcut
    block as relu(x), a kept one as relu(branch / (1 - p) + x); the shortcut is never dropped."""
    torch.manual_seed(0)
    block = Bottleneck(64, 16, drop_prob=0.5).train()  # 64 -> 16 -> 64: the shortcut is x itself
    x = torch.randn(16, 64, 4, 4)
    with torch.no_grad():
        inner = block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))
        branch = block.bn3(block.conv3(inner))
        torch.manual_seed(1)
        out = block(x)
    dropped = [torch.allclose(o, torch.relu(i)) for o, i in zip(out, x)]
    kept = [torch.allclose(o, torch.relu(b / 0.5 + i), atol=1e-6) for o, b, i in zip(out, branch, x)]
    assert all(d != k for d, k in zip(dropped, kept)) and 0 < sum(dropped) < len(x)


def test_every_batchnorm_is_torchvisions() -> None:
    """eps 1e-5 and momentum 0.1 (PyTorch's convention: running = 0.9 running + 0.1 batch), so
    the running statistics evaluation uses follow the batches as torchvision's do."""
    model = UNetResNet50()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 53 + 10 and all(m.eps == 1e-5 and m.momentum == 0.1 for m in norms)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        model.train()(x)
        stem = model.encoder.conv1(model.normalize(x))
    torch.testing.assert_close(model.encoder.bn1.running_mean, 0.1 * stem.mean(dim=(0, 2, 3)))


def test_drop_path_rule_and_unchanged_keys() -> None:
    m = UNetResNet50(drop_path=0.3, head_dropout=0.2)
    probs = [b.drop_prob for b in m.encoder.modules() if isinstance(b, Bottleneck)]
    assert len(probs) == 16 and probs[0] == 0 and probs[-1] == pytest.approx(0.3)
    assert probs == pytest.approx([0.3 * i / 15 for i in range(16)])  # linear in depth
    assert list(m.state_dict()) == list(UNetResNet50().state_dict())  # torchvision's keys, nothing added
    m.eval()
    torch.manual_seed(0)
    plain = UNetResNet50().eval()
    m.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), plain(x))  # both act in training only
        m.train()
        torch.manual_seed(1)
        assert not torch.equal(m(x), plain.train()(x))
    assert isinstance(m.dropout, torch.nn.Dropout2d)  # whole channels, not single pixels


def test_decoder_without_skips_ignores_the_skip_features() -> None:
    torch.manual_seed(0)
    features = [
        torch.randn(1, c, 64 // s, 64 // s) for c, s in [(64, 2), (256, 4), (512, 8), (1024, 16), (2048, 32)]
    ]
    zeroed = [torch.zeros_like(f) for f in features[:4]] + [features[4]]
    for skips in (True, False):
        decoder = UNetDecoder(skips=skips).eval()
        with torch.no_grad():
            same = torch.equal(decoder(features), decoder(zeroed))
        assert same == (not skips)  # without skips only the deepest map matters
    plain, no_skips = UNetDecoder(), UNetDecoder(skips=False)
    assert [b.conv1[0].in_channels for b in no_skips.blocks] == [2048, 256, 128, 64, 32]
    assert [b.conv1[0].in_channels for b in plain.blocks] == [2048 + 1024, 256 + 512, 128 + 256, 64 + 64, 32]
    # the skips' channels add 9 * 256 * 1024 + 9 * 128 * 512 + 9 * 64 * 256 + 9 * 32 * 64 weights
    assert n_params(plain) - n_params(no_skips) == 9 * (256 * 1024 + 128 * 512 + 64 * 256 + 32 * 64)


def test_deep_supervision_heads_train_only_and_leave_the_rest_alone() -> None:
    torch.manual_seed(0)
    ds = UNetResNet50(deep_supervision=True)
    torch.manual_seed(0)
    plain = UNetResNet50()
    extra = {k: v for k, v in ds.state_dict().items() if k.startswith("aux_heads.")}
    assert sorted({k.split(".")[1] for k in extra}) == ["0", "1", "2"]
    rest = {k: v for k, v in ds.state_dict().items() if k not in extra}
    assert list(rest) == list(plain.state_dict())
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in rest.items())  # same seed, same weights
    x = torch.rand(2, 3, 64, 64)
    logits, aux = ds.train()(x)
    assert logits.shape == (2, 1, 64, 64) and [a.shape[-1] for a in aux] == [8, 16, 32]  # /8, /4, /2
    assert isinstance(ds.eval()(x), torch.Tensor)  # inference: the logits alone


def test_head_prior_starts_every_pixel_at_the_prior_and_leaves_the_rest_alone() -> None:
    # RetinaNet's prior initialisation: p = sigmoid(w * d + b) with w ~ 0 and b = logit(0.1),
    # so every pixel's first prediction is ~0.1 whatever the image; the kaiming head's logits
    # have a standard deviation of several units, far from any constant.
    from unet_scratch.config import TrainConfig
    from unet_scratch.engine import build_model

    prior = build_model(TrainConfig(seed=3, head_prior=0.1, deep_supervision=True)).train()
    plain = build_model(TrainConfig(seed=3, deep_supervision=True)).train()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        logits, aux = prior(x)
        plain_logits, _ = plain(x)
    for z in [logits, *aux]:  # the auxiliary heads start at the prior too
        p = torch.sigmoid(z)
        assert p.mean().item() == pytest.approx(0.1, abs=0.01) and p.std().item() < 0.02
    assert torch.sigmoid(plain_logits).std().item() > 0.1
    assert prior.head.bias.item() == pytest.approx(math.log(0.1 / 0.9))
    changed = [k for k, v in prior.state_dict().items() if not torch.equal(v, plain.state_dict()[k])]
    assert sorted(changed) == sorted(
        ["head.weight", "head.bias"] + [f"aux_heads.{i}.{w}" for i in range(3) for w in ("weight", "bias")]
    )


def test_head_dropout_drops_whole_decoder_channels_before_the_head() -> None:
    """``--head-dropout``: in training, whole channels of the decoder's output are zeroed per
    sample and the rest scaled by 1 / (1 - p) (Dropout2d), and the head convolves that; in eval
    mode the head sees the decoder's output as it is."""
    torch.manual_seed(0)
    model = UNetResNet50(head_dropout=0.5)
    seen: dict[str, torch.Tensor] = {}
    model.decoder.register_forward_hook(lambda m, i, o: seen.__setitem__("decoder", o))
    model.head.register_forward_hook(lambda m, i, o: seen.__setitem__("head_in", i[0]))
    x = torch.rand(4, 3, 64, 64)
    out = model.train()(x)
    d, given = seen["decoder"], seen["head_in"]
    kept = given.flatten(2).abs().amax(2) > 0  # (B, C): which planes reached the head
    assert 0 < kept.sum() < kept.numel()  # some channels dropped, not all
    torch.testing.assert_close(given, d * kept[..., None, None] * 2.0)
    head = model.head
    torch.testing.assert_close(out, F.conv2d(given, head.weight, head.bias, padding=head.padding))
    with torch.no_grad():
        out = model.eval()(x)
    torch.testing.assert_close(seen["head_in"], seen["decoder"])
    torch.testing.assert_close(out, F.conv2d(seen["decoder"], head.weight, head.bias, padding=head.padding))
