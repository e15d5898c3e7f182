"""A teaching view of the model, measured on the live network: every stage's input (and what is
concatenated there), output shape, parameters, forward FLOPs and receptive field, and a picture
of the U drawn from the same numbers.

    python -m unet_scratch.summary [--input-size 128] [--skips none]
    python -m unet_scratch.summary --diagram docs/architecture.png       # needs matplotlib
    python -m unet_scratch.summary --blocks docs/blocks.png              # inside two blocks

Nothing here is typed by hand: one forward pass with hooks records what each stage receives and
returns, PyTorch's FLOP counter (``torch.utils.flop_counter``) counts each stage's multiply-adds
(x2: a FLOP is a multiply or an add), and the receptive field is accumulated over the encoder's
convolutions and pooling in the order the forward pass calls them. Change the model and the
table and the picture follow.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import ArgumentParser, UserError, exit_status, exit_with
from .files import check_file, save_figure
from .model import UNetResNet50


def count(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters())


@dataclass
class Stage:
    """One row of the table: what a stage receives and returns, and what it costs."""

    name: str  # e.g. "encoder.layer2"
    part: str  # "encoder", "decoder" or "head"
    inputs: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # (what, shape)
    output: tuple[int, ...] = ()
    parameters: int = 0
    flops: int = 0  # forward, for the (1, 3, S, S) input
    receptive_field: int | None = None  # input pixels one output pixel can see (encoder stages)

    @property
    def in_channels(self) -> int:
        """Channels entering the stage's first convolution: the concatenation's width."""
        return sum(shape[1] for _, shape in self.inputs)


def receptive_fields(encoder: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Receptive field (pixels, one side) of the output of ``stem``, ``maxpool``, ``layer1..4``.

    Walks the convolutions and pooling of the main path in call order: each layer of kernel k
    and stride s widens the field by ``(k - 1) * jump`` and multiplies the jump (the input
    distance between neighbouring outputs) by s. The 1x1 projection shortcuts widen nothing and
    share their block's stride, so they are left out.
    """
    calls: list[tuple[str, int, int]] = []
    hooks = []
    for name, m in encoder.named_modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)) and "downsample" not in name:
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            hooks.append(
                m.register_forward_pre_hook(lambda _m, _i, n=name, k=k, s=s: calls.append((n, k, s)))
            )
    try:
        encoder(x)
    finally:
        for h in hooks:
            h.remove()
    rf, jump, fields = 1, 1, {}
    for name, k, s in calls:
        rf, jump = rf + (k - 1) * jump, jump * s
        stage = "stem" if name == "conv1" else name.split(".")[0]
        fields[stage] = rf  # the last call of a stage leaves its output's field
    return fields


@torch.inference_mode()
def stage_table(model: UNetResNet50, input_size: int = 128) -> list[Stage]:
    """The stages of ``model`` in data-flow order for a ``(1, 3, S, S)`` input (see module doc)."""
    model.eval()
    x = torch.zeros(1, 3, input_size, input_size)
    enc, dec = model.encoder, model.decoder
    stages = [Stage("encoder.stem (conv1-bn1-relu)", "encoder"), Stage("encoder.maxpool", "encoder")]
    stages += [
        Stage(f"encoder.layer{i} ({len(getattr(enc, f'layer{i}'))} bottlenecks)", "encoder")
        for i in range(1, 5)
    ]
    stages += [Stage(f"decoder.blocks.{i}", "decoder") for i in range(len(dec.blocks))]
    stages.append(Stage("head (logits)", "head"))
    modules = [enc.relu, enc.maxpool, enc.layer1, enc.layer2, enc.layer3, enc.layer4, *dec.blocks, model.head]
    flop_names = ["encoder.conv1", "encoder.maxpool", *[f"encoder.layer{i}" for i in range(1, 5)]]
    flop_names += [f"decoder.blocks.{i}" for i in range(len(dec.blocks))] + ["head"]

    def record(stage: Stage, labels: list[str]):  # noqa: ANN202
        def hook(_m: nn.Module, args: tuple, out: torch.Tensor) -> None:
            stage.inputs = [(label, tuple(a.shape)) for label, a in zip(labels, args) if a is not None]
            stage.output = tuple(out.shape)

        return hook

    skip_names = ["layer3", "layer2", "layer1", "stem"] if dec.skips else []
    hooks = []
    for i, (stage, module) in enumerate(zip(stages, modules)):
        if stage.part == "decoder":
            j = i - 6
            labels = ["from " + ("layer4" if j == 0 else f"decoder.blocks.{j - 1}") + " (upsampled x2)"]
            labels.append(f"skip from {skip_names[j]}" if j < len(skip_names) else "")
        else:
            labels = ["input"]
        if stage.name.startswith("encoder.stem"):  # the stem's ReLU sees conv1-bn1's output
            hooks.append(module.register_forward_hook(record(stage, ["image"])))
        else:
            hooks.append(module.register_forward_hook(record(stage, labels)))
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    flops = {
        name.split(".", 1)[1]: sum(v.values()) for name, v in counter.get_flop_counts().items() if "." in name
    }
    fields = receptive_fields(enc, x)
    for stage, flop_name in zip(stages, flop_names):
        stage.flops = flops.get(flop_name, 0)
        if stage.part == "decoder":  # the block receives the un-upsampled map: show what it concatenates
            (label, shape), *rest = stage.inputs
            stage.inputs = [(label, (shape[0], shape[1], shape[2] * 2, shape[3] * 2)), *rest]
        key = stage.name.split()[0].replace("encoder.", "")
        stage.receptive_field = fields.get(key) if stage.part == "encoder" else None
    stages[0].inputs = [("image", tuple(x.shape))]
    stages[0].parameters = count(enc.conv1) + count(enc.bn1)
    for stage, module in zip(stages[1:], modules[1:]):
        stage.parameters = count(module)
    return stages


def format_table(stages: list[Stage], input_size: int) -> str:
    lines = [
        f"{'stage':<34} {'input channels':<26} {'output shape':<20} {'parameters':>12} "
        f"{'MFLOPs':>9} {'RF':>5}"
    ]
    for s in stages:
        if s.part == "decoder" and len(s.inputs) == 2:
            ins = f"{s.inputs[0][1][1]} + skip {s.inputs[1][1][1]} = {s.in_channels}"
        else:
            ins = f"{s.in_channels}" + (" (no skip)" if s.part == "decoder" else "")
        rf = f"{s.receptive_field}" if s.receptive_field else ""
        lines.append(
            f"{s.name:<34} {ins:<26} {str(s.output):<20} {s.parameters:>12,} {s.flops / 1e6:>9,.0f} {rf:>5}"
        )
    total = sum(s.flops for s in stages)
    lines.append(f"{'total':<81} {sum(s.parameters for s in stages):>12,} {total / 1e6:>9,.0f}")
    lines.append(
        f"\nforward FLOPs for one {input_size}x{input_size} image: {total / 1e9:.2f} G "
        "(torch.utils.flop_counter: convolutions only; BatchNorm, ReLU, upsampling and "
        "concatenation are not counted). RF: receptive field of an output pixel, in input pixels."
    )
    return "\n".join(lines)


def _pyplot(flag: str):  # noqa: ANN202 - the pyplot module
    """matplotlib's pyplot on the Agg backend (files only), or a :class:`UserError` naming
    ``flag`` and the install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UserError(f"{flag} needs matplotlib: pip install matplotlib (the [plot] extra)") from e
    return plt


def _box(ax, x: float, y: float, width: float, height: float, colour: str) -> None:  # noqa: ANN001
    """A rounded box centred on ``(x, y)``."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02",
            facecolor=colour, edgecolor="#333333", linewidth=0.9,
        )
    )  # fmt: skip


def _arrow(ax, a: tuple[float, float], b: tuple[float, float], colour: str = "#333333", **kw) -> None:  # noqa: ANN001, ANN003
    """An arrow from ``a`` to ``b``."""
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(
        FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=11, color=colour, linewidth=1.1, **kw)
    )


def draw_diagram(stages: list[Stage], path: str | Path, input_size: int) -> Path:
    """The U, drawn from ``stages``: one column per stage in data-flow order, the height of a
    box its resolution (the encoder goes down, the decoder back up), skips drawn across, every
    block with its output shape and every concatenation with its width (needs matplotlib)."""
    import math

    plt = _pyplot("--diagram")

    step, width, height = 2.1, 1.92, 1.25
    columns = len(stages) + 1  # the image, then every stage
    fig, ax = plt.subplots(figsize=(columns * 1.6, 8.8))
    ax.set_xlim(-0.3, columns * step)
    ax.set_ylim(-1.3, 8.3)
    ax.axis("off")
    colours = {"encoder": "#9ecae1", "decoder": "#fdae6b", "head": "#a1d99b"}

    def y_of(shape: tuple[int, ...]) -> float:  # one level per halving of the resolution
        return 7.4 - 1.45 * math.log2(input_size / shape[-1])

    centres = [(0.5 * step + 0.2, y_of(stages[0].inputs[0][1]))]
    ax.text(*centres[0], f"image\n3 x {input_size} x {input_size}", ha="center", va="center", fontsize=9)
    for k, s in enumerate(stages, start=1):
        cx, cy = (k + 0.5) * step, y_of(s.output)
        centres.append((cx, cy))
        _box(ax, cx, cy, width, height, colours[s.part])
        title = s.name.split()[0].replace("encoder.", "").replace("decoder.blocks.", "decoder ")
        lines = [title]
        if s.part == "decoder":
            up, *skip = s.inputs
            lines.append(
                f"{up[1][1]}+{skip[0][1][1]}={s.in_channels}" if skip else f"{s.in_channels}, no skip"
            )
        c, h, w = s.output[1:]
        lines.append(f"-> {c} x {h} x {w}")
        params = f"{s.parameters / 1e6:.2f} M" if s.parameters >= 10_000 else f"{s.parameters:,} params"
        lines.append(params + (f", RF {s.receptive_field}" if s.receptive_field else ""))
        ax.text(cx, cy, "\n".join(lines), ha="center", va="center", fontsize=8.6)
    for (ax0, ay0), (bx0, by0) in zip(centres, centres[1:]):  # the data flow, box to box
        start = (
            (ax0 + width / 2, ay0)
            if ay0 == by0
            else (ax0 + 0.25, ay0 - height / 2 if by0 < ay0 else ay0 + height / 2)
        )
        end = (
            (bx0 - width / 2, by0)
            if ay0 == by0
            else (bx0 - 0.25, by0 + height / 2 if by0 < ay0 else by0 - height / 2)
        )
        _arrow(ax, start, end)
    by_name = {s.name.split()[0].replace("encoder.", ""): k for k, s in enumerate(stages, start=1)}
    for k, s in enumerate(stages, start=1):
        if s.part == "decoder" and len(s.inputs) == 2:
            source = by_name[s.inputs[1][0].replace("skip from ", "")]
            (sx, sy), (dx, dy) = centres[source], centres[k]
            start, end = (sx + width / 2, sy + 0.18), (dx - width / 2, dy + 0.18)
            _arrow(ax, start, end, colour="#3182bd", linestyle="--")
            label, ly = f"skip: {s.inputs[1][1][1]} channels, concatenated", sy + 0.24
            if dx - sx < 3 * step:  # no room between the boxes: above them
                label, ly = f"skip: {s.inputs[1][1][1]} ch", sy + height / 2 + 0.04
            ax.text((sx + dx) / 2, ly, label, ha="center", va="bottom", fontsize=9, color="#3182bd")
    for level in range(6):
        ax.text(
            -0.25,
            7.4 - 1.45 * level,
            f"1/{2**level}" if level else "full",
            fontsize=8,
            color="#777777",
            va="center",
        )
    total, flops = sum(s.parameters for s in stages), sum(s.flops for s in stages)
    ax.text(
        columns * step / 2, -1.0,
        f"UNetResNet50 at {input_size}x{input_size}: {total:,} parameters, {flops / 1e9:.2f} GFLOPs "
        "forward per image. Each box: output channels x height x width, parameters, receptive field "
        "(encoder); a decoder box also its input channels, upsampled + skip = concatenated.\n"
        "Height = resolution. Blue: ResNet50 encoder; orange: decoder blocks "
        "(upsample x2, concatenate, 2 x conv3x3-BN-ReLU); green: conv3x3 head; dashed: skip connections. "
        "Drawn by python -m unet_scratch.summary --diagram from a forward pass of the live model.",
        ha="center", va="center", fontsize=8,
    )  # fmt: skip
    return save_figure(fig, path, "--diagram", dpi=100, bbox_inches="tight")


@dataclass
class Step:
    """One step inside a block: what it does, the shape it returns, its parameters."""

    name: str  # the module's name inside the block (``conv2``, ``downsample``), or the operation
    what: str  # e.g. "conv 3x3 stride 2, 256 -> 256, BN, ReLU"
    output: tuple[int, ...]
    parameters: int = 0


def _conv_step(name: str, conv: nn.Conv2d, bn: nn.Module, relu: bool, output: tuple[int, ...]) -> Step:
    k, stride = conv.kernel_size[0], conv.stride[0]
    what = f"conv {k}x{k}" + (f" stride {stride}" if stride > 1 else "")
    what += f", {conv.in_channels} -> {conv.out_channels}, BN" + (", ReLU" if relu else "")
    return Step(name, what, output, count(conv) + count(bn))


@torch.inference_mode()
def block_steps(model: UNetResNet50, input_size: int = 128) -> dict[str, list[Step]]:
    """The steps inside two blocks of ``model``, for a ``(1, 3, S, S)`` input: the first
    bottleneck of ``layer3`` (the one with the projection shortcut) and decoder block 0, each
    in data-flow order, with the shapes one forward pass records (hooks; the upsampled map, made
    by ``F.interpolate``, not a module, is the block's input at twice the size) and the
    parameters of the live modules. Keys ``"bottleneck"`` and ``"decoder"``."""
    model.eval()
    bottleneck, block = model.encoder.layer3[0], model.decoder.blocks[0]
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, args: tuple, out: torch.Tensor) -> None:
            shapes[name] = tuple(out.shape)
            shapes[name + ".in"] = tuple(args[0].shape)
            if len(args) > 1 and args[1] is not None:
                shapes[name + ".skip"] = tuple(args[1].shape)

        return hook

    watched = {"bottleneck": bottleneck, "block": block}
    for name in ("conv1", "conv2", "conv3"):
        watched[f"bottleneck.{name}"] = getattr(bottleneck, name)
    if bottleneck.downsample is not None:
        watched["bottleneck.downsample"] = bottleneck.downsample
    watched |= {"block.conv1": block.conv1, "block.conv2": block.conv2}
    hooks = [m.register_forward_hook(record(n)) for n, m in watched.items()]
    try:
        model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in hooks:
            h.remove()
    b = bottleneck
    steps = [Step("input", "from layer2", shapes["bottleneck.in"])]
    for i, (conv, bn) in enumerate(((b.conv1, b.bn1), (b.conv2, b.bn2), (b.conv3, b.bn3)), start=1):
        steps.append(_conv_step(f"conv{i}", conv, bn, i < 3, shapes[f"bottleneck.conv{i}"]))
    if b.downsample is not None:  # the shortcut's projection: [conv1x1, BN]
        conv, bn = b.downsample
        steps.append(_conv_step("downsample", conv, bn, False, shapes["bottleneck.downsample"]))
    steps.append(Step("add", "+ the shortcut, then ReLU", shapes["bottleneck"]))
    x, skip = shapes["block.in"], shapes.get("block.skip")
    decoder = [Step("input", "from layer4", x), Step("upsample", "nearest x2", (*x[:2], x[2] * 2, x[3] * 2))]
    if skip is not None:
        decoder.append(Step("skip", "from layer3", skip))
        decoder.append(Step("concatenate", "along the channels", shapes["block.conv1.in"]))
    for name in ("conv1", "conv2"):
        conv_bn_relu = getattr(block, name)
        decoder.append(_conv_step(name, conv_bn_relu[0], conv_bn_relu[1], True, shapes[f"block.{name}"]))
    return {"bottleneck": steps, "decoder": decoder}


def draw_blocks(steps: dict[str, list[Step]], path: str | Path, layer3_blocks: int, input_size: int) -> Path:
    """The insides of the two blocks of :func:`block_steps`, side by side: one box per step with
    its output shape and parameters, the shortcut (bottleneck) and the skip (decoder) drawn beside
    the main path (needs matplotlib)."""
    plt = _pyplot("--blocks")
    fig, axes = plt.subplots(1, 2, figsize=(16, 8.2))
    width, height, side = 4.2, 1.15, 5.0
    colours = {"conv": "#9ecae1", "side": "#c6dbef", "op": "#eeeeee", "input": "#ffffff"}

    def box(ax, x: float, y: float, step: Step, colour: str) -> None:  # noqa: ANN001
        _box(ax, x, y, width, height, colour)
        c, h, w = step.output[1:]
        lines = [step.name, step.what, f"-> {c} x {h} x {w}"]
        if step.parameters:
            lines[-1] += f",  {step.parameters:,} parameters"
        ax.text(x, y, "\n".join(lines), ha="center", va="center", fontsize=8.5)

    def column(ax, chain: list[Step], x: float, top: float) -> list[float]:  # noqa: ANN001
        ys = [top - 1.55 * i for i in range(len(chain))]
        for i, (step, y) in enumerate(zip(chain, ys)):
            colour = "input" if step.name == "input" else "conv" if step.parameters else "op"
            box(ax, x, y, step, colours[colour])
            if i:
                _arrow(ax, (x, ys[i - 1] - height / 2), (x, y + height / 2))
        return ys

    # left: the bottleneck; the shortcut (projected, or the input itself) joins before the last ReLU
    ax = axes[0]
    by_name = {s.name: s for s in steps["bottleneck"]}
    main = [by_name[n] for n in ("input", "conv1", "conv2", "conv3", "add")]
    ys = column(ax, main, 0, 7)
    shortcut = by_name.get("downsample")
    if shortcut is not None:
        sy = (ys[1] + ys[3]) / 2
        box(ax, side, sy, shortcut, colours["side"])
        _arrow(ax, (width / 2, ys[0]), (side, sy + height / 2), colour="#3182bd")
        _arrow(ax, (side, sy - height / 2), (width / 2, ys[4]), colour="#3182bd")
    else:
        _arrow(ax, (width / 2, ys[0]), (width / 2, ys[4]), colour="#3182bd", connectionstyle="arc3,rad=-0.4")
    first = by_name["input"]
    ax.set_title(
        f"layer3, bottleneck 1 of {layer3_blocks}: 1x1 squeezes, 3x3 looks around (and strides), 1x1 expands",
        fontsize=10,
    )
    ax.text(
        side / 2, ys[-1] - 1.3,
        f"The other {layer3_blocks - 1} bottlenecks of layer3 take {by_name['add'].output[1]} channels "
        f"in and out at stride 1:\nno projection, the input itself is added (blue: the shortcut; here a "
        f"{first.output[1]} x {first.output[2]} x {first.output[3]} input must be projected).",
        ha="center", va="center", fontsize=8.5,
    )  # fmt: skip
    # right: decoder block 0; the skip joins at the concatenation
    ax = axes[1]
    by_name = {s.name: s for s in steps["decoder"]}
    chain = [by_name[n] for n in ("input", "upsample", "concatenate", "conv1", "conv2") if n in by_name]
    ys = column(ax, chain, 0, 7)
    if "skip" in by_name:
        box(ax, side, ys[1], by_name["skip"], colours["side"])
        _arrow(ax, (side, ys[1] - height / 2), (width / 2, ys[2]), colour="#3182bd", linestyle="--")
    joined = "concatenate the skip, " if "skip" in by_name else ""
    ax.set_title(f"decoder block 0: upsample, {joined}two conv 3x3", fontsize=10)
    for ax in axes:
        ax.set_xlim(-width / 2 - 0.2, side + width / 2 + 0.2)
        ax.set_ylim(7 - 1.55 * 4 - 1.9, 7 + height / 2 + 0.2)
        ax.axis("off")
    fig.text(
        0.5, 0.02,
        f"Each box: the step, its output channels x height x width for one {input_size}x{input_size} frame, "
        "its parameters (conv + BN). Drawn by python -m unet_scratch.summary --blocks from a forward pass "
        "of the live model.",
        ha="center", fontsize=8.5,
    )  # fmt: skip
    return save_figure(fig, path, "--blocks", dpi=100, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    first_paragraph = " ".join(__doc__.split("\n\n")[0].split())
    parser = ArgumentParser(prog="python -m unet_scratch.summary", description=first_paragraph)
    parser.add_argument("--input-size", type=int, default=128, help="square input size, a multiple of 32")
    parser.add_argument(
        "--skips", default="all", choices=("all", "none"), help="the model with or without skips"
    )
    parser.add_argument("--diagram", help="also draw the U to this PNG (needs matplotlib)")
    parser.add_argument(
        "--blocks",
        help="also draw the inside of layer3's first bottleneck and decoder block 0 to this PNG "
        "(needs matplotlib)",
    )
    args = parser.parse_args(argv)
    return exit_status(lambda: summarize(args))


def summarize(args: argparse.Namespace) -> int:
    if args.input_size < 32 or args.input_size % 32:
        raise UserError(f"--input-size must be a positive multiple of 32, got {args.input_size}")
    for flag, picture in (("--diagram", args.diagram), ("--blocks", args.blocks)):
        if picture:  # a path that cannot be written stops it before the table, not after
            check_file(picture, flag, figure=True)
    model = UNetResNet50(skips=args.skips == "all")
    stages = stage_table(model, args.input_size)
    print(
        f"UNetResNet50{' without skips' if args.skips == 'none' else ''}, "
        f"input (1, 3, {args.input_size}, {args.input_size})\n"
    )
    print(format_table(stages, args.input_size))
    print()
    for name, part in (("encoder", model.encoder), ("decoder", model.decoder), ("head", model.head)):
        print(f"{name + ' total':<82} {count(part):>12,}")
    print(f"{'model total':<82} {count(model):>12,}")
    if args.diagram:
        print(f"\ndiagram -> {draw_diagram(stages, args.diagram, args.input_size)}")
    if args.blocks:
        steps = block_steps(model, args.input_size)
        drawn = draw_blocks(steps, args.blocks, len(model.encoder.layer3), args.input_size)
        print(f"{'' if args.diagram else chr(10)}blocks -> {drawn}")
    return 0


if __name__ == "__main__":
    exit_with(main())
