"""Speed benchmark of the ResNet50-UNet training and inference paths (plain PyTorch, no pytest).

    python benchmarks/bench.py                    # CPU (or the default device), bs 8, 128x128
    python benchmarks/bench.py --device cuda --steps 30
    python benchmarks/bench.py --compare-smp      # also segmentation_models_pytorch, if installed
    python benchmarks/bench.py --compile --profile --data DIR
    python benchmarks/bench.py --skip-fp32 --skip-epoch --conv-layers

Prints, for batch 8 at 128x128 unless told otherwise:
  - median seconds per training step and images/s through ``engine.train_step``: fp32 (NCHW,
    no autocast, per-tensor Adam), the default fast path (autocast + channels_last + fused
    AdamW), on CPUs with bf16 the ``--amp off`` path (the fast path in fp32) and fp32 tensors
    with oneDNN's bf16 convolution math, and with ``--compile`` the fast path under
    torch.compile;
  - the wall time of one full epoch through the real code path (``train_one_epoch`` on
    device-resident uint8 data with the default augmentations and weight average, then
    validation), 363 train + 65 val frames;
  - inference images/s at batch 1 and batch 32 (``engine.predict``), compiled too with
    ``--compile``;
  - achieved FLOP/s of a training step against a measured matmul peak (on CPUs with bf16, the
    fp32 peak too, and the fast path's step time against the ``--amp off`` path's);
  - ``--profile``: the step's operators by self time; ``--conv-layers``: each distinct
    convolution's forward, input gradient and weight gradient timed apart; ``--data``: the
    time to decode and resize the 363 training frames, which a per-epoch DataLoader pipeline pays every epoch;
  - peak memory (process RSS on CPU, max allocated on CUDA);
  - ``--deploy RUN`` (with ``--data`` and ``--val-frames``): inference for deployment, images/s at
    batch 1 and 32, at the run's input size and at the frames' native 288x384, for PyTorch eager,
    ONNX Runtime fp32 and ONNX Runtime int8 (static quantisation, calibrated on 32 training
    frames); the validation Dice of each (what int8 costs); and predict.py on a 288x384 video end
    to end (decode, model, overlay, encode) in frames/s, against a 25 frames/s colonoscope.
Timed figures are medians over ``--steps`` steps after ``--warmup`` steps.

    python benchmarks/bench.py --skip-fp32 --skip-epoch --deploy runs/f1-dice \
        --data ../shared/data/cvc-clinicdb-dev --val-frames 364-428
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet_scratch.config import TrainConfig  # noqa: E402
from unet_scratch.data import load_frames  # noqa: E402
from unet_scratch.engine import (  # noqa: E402
    ModelEMA,
    amp_dtype,
    build_model,
    build_optimizer,
    evaluate,
    loss_for,
    pick_device,
    predict,
    train_one_epoch,
    train_step,
)
from unet_scratch.errors import INTERRUPTED  # noqa: E402
from unet_scratch.export import export_onnx  # noqa: E402
from unet_scratch.losses import DiceLoss  # noqa: E402


class Variant(NamedTuple):
    """One way of running the training step."""

    label: str
    amp: torch.dtype | None  # autocast dtype, None = off
    channels_last: bool = True
    fused: bool = True  # fused Adam(W) vs the per-tensor loop
    compiled: bool = False  # torch.compile
    conv_bf16: bool = False  # torch.backends.mkldnn.conv.fp32_precision = "bf16"


def set_conv_bf16(on: bool) -> None:
    """fp32 convolutions computed by oneDNN in bf16 (torch >= 2.9), or back to the default."""
    conv = getattr(torch.backends.mkldnn, "conv", None)
    if conv is not None:
        conv.fp32_precision = "bf16" if on else "none"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], device: torch.device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_step(
    model: torch.nn.Module,
    device: torch.device,
    amp: torch.dtype | None,
    channels_last: bool,
    batch: int,
    size: int,
    fused: bool = True,
    compile: bool = False,
) -> tuple[Callable[[], object], int]:
    """A closure running one training step on fixed random data; also the FLOPs of a step."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    config = TrainConfig()
    optimizer = (
        build_optimizer(model, config, device) if fused else torch.optim.Adam(model.parameters(), lr=1e-4)
    )
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device).contiguous(memory_format=memory_format)
    y = (torch.rand(batch, 1, size, size, generator=g) > 0.8).float().to(device)
    loss_fn = DiceLoss()
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None

    net = torch.compile(model) if compile else model

    def step() -> object:
        return train_step(net, x, y, loss_fn, optimizer, amp, scaler)

    flops = 0
    if compile:  # the counter's module hooks would keep TorchDynamo from compiling; same FLOPs anyway
        return step, flops
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
    except Exception:  # flop counting is informative only
        pass
    return step, flops


def print_profile(step: Callable[[], object], device: torch.device, steps: int = 4) -> None:
    """Self time per operator over ``steps`` training steps, largest first (top 15)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    step()  # warm-up outside the profile
    sync(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=15))


def conv_layers(
    device: torch.device, dtype: torch.dtype, bs: int, size: int, steps: int, warmup: int
) -> None:
    """Time each distinct convolution of the model apart: its forward, its input gradient and
    its weight gradient (the two halves of ``convolution_backward``, which a profile reports as
    one), in ``dtype`` and channels_last as the fast path runs them; one line per shape, the
    slowest first, with the GFLOP/s each part reaches."""
    from collections import Counter

    cl = torch.channels_last
    model = build_model(TrainConfig()).to(device, memory_format=cl).eval()
    shapes: Counter = Counter()
    first: dict[tuple, str] = {}

    def record(name: str) -> Callable:
        def hook(module: torch.nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
            key = (tuple(inputs[0].shape), module.out_channels, module.kernel_size, module.stride,
                   module.padding, module.dilation, module.groups)  # fmt: skip
            shapes[key] += 1
            first.setdefault(key, name)

        return hook

    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [m.register_forward_hook(record(n)) for n, m in convs]
    with torch.no_grad():
        model(torch.zeros(bs, 3, size, size, device=device).contiguous(memory_format=cl))
    for h in hooks:
        h.remove()
    labels = ("fwd", "grad-input", "grad-weight")
    rows, totals = [], [0.0, 0.0, 0.0]
    for key, count in shapes.items():
        in_shape, cout, k, stride, pad, dil, groups = key
        x = torch.randn(in_shape, device=device, dtype=dtype).contiguous(memory_format=cl)
        w = torch.randn(cout, in_shape[1] // groups, *k, device=device, dtype=dtype)
        w = w.contiguous(memory_format=cl)
        y = torch.nn.functional.conv2d(x, w, None, stride, pad, dil, groups)
        grad = torch.randn_like(y)
        args = (grad, x, w, None, list(stride), list(pad), list(dil), False, [0, 0], groups)
        stem = first[key] == "encoder.conv1"  # its input is the image: no input gradient in training
        backward = functools.partial(torch.ops.aten.convolution_backward, *args)
        calls = [
            functools.partial(torch.nn.functional.conv2d, x, w, None, stride, pad, dil, groups),
            None if stem else functools.partial(backward, [True, False, False]),
            functools.partial(backward, [False, True, False]),
        ]
        times = [median_time(c, device, steps, warmup) if c else 0.0 for c in calls]
        flop = 2 * y.numel() * w[0].numel()  # each of the three parts is one such product
        totals = [a + count * t for a, t in zip(totals, times)]
        rows.append((count * sum(times), key, count, times, flop, first[key]))
    print(f"convolutions of one training step, {str(dtype).replace('torch.', '')}, channels_last "
          "(median ms per call, GFLOP/s in brackets; xN: calls per step):")  # fmt: skip
    for _, key, count, times, flop, name in sorted(rows, key=lambda r: -r[0]):
        in_shape, cout, k = key[0], key[1], key[2]
        parts = "  ".join(
            f"{label} {1e3 * t:6.2f} ({flop / t / 1e9:5.0f})" if t else f"{label}      -       "
            for label, t in zip(labels, times)
        )
        print(f"  {in_shape[1]:>4}->{cout:<4} {k[0]}x{k[1]}/{key[3][0]} at {in_shape[2]:>3}x{in_shape[3]:<3} "
              f"x{count:<2} {parts}  {name}")  # fmt: skip
    per_part = ", ".join(f"{label} {1e3 * t:.0f} ms" for label, t in zip(labels, totals))
    print(f"  all convolutions of a step: {per_part}; {1e3 * sum(totals):.0f} ms in all")
    # the slowest weight gradient computed another way: im2col (unfold) and one matmul, whose
    # reduction runs over batch x pixels (what oneDNN's kernel may split poorly when they are few)
    _, key, _, times, _, name = max(rows, key=lambda r: r[3][2])
    in_shape, cout, k, stride, pad = key[:5]
    x = torch.randn(in_shape, device=device, dtype=dtype).contiguous(memory_format=cl)
    w = torch.randn(cout, in_shape[1], *k, device=device, dtype=dtype).contiguous(memory_format=cl)
    grad = torch.randn_like(torch.nn.functional.conv2d(x, w, None, stride, pad))

    def unfold_matmul() -> torch.Tensor:
        cols = torch.nn.functional.unfold(x, k, padding=pad, stride=stride)  # (B, Cin*kh*kw, pixels)
        cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)
        return (grad.transpose(0, 1).reshape(cout, -1) @ cols.t()).view(w.shape)

    reference = torch.ops.aten.convolution_backward(
        grad, x, w, None, list(stride), list(pad), [1, 1], False, [0, 0], 1, [False, True, False]
    )[1].float()
    t = median_time(unfold_matmul, device, steps, warmup)
    gap = ((unfold_matmul().float() - reference).abs().max() / reference.abs().max()).item()
    print(f"  {name}'s weight gradient as unfold + matmul: {1e3 * t:.2f} ms against {1e3 * times[2]:.2f} ms "
          f"(largest difference {gap:.1e} of the largest value)")  # fmt: skip


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Measured FLOP/s of a large square matmul in ``dtype`` (the practical peak)."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = median_time(lambda: a @ b, device, steps=5, warmup=2)
    return 2 * n**3 / t


def peak_memory_text(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB max allocated (CUDA)"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return f"{rss_kib / 2**20:.2f} GiB peak process RSS"


# ----------------------------------------------------------------------------- deployment


def quantize_int8(fp32: Path, out: Path, calibration: torch.Tensor) -> None:
    """Static int8 quantisation (QDQ, per-channel weights, uint8 activations) calibrated on
    ``calibration (N, 3, H, W)`` float frames."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [{"image": calibration[i : i + 8].numpy()} for i in range(0, len(calibration), 8)]
            )

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    fp32, out = fp32.resolve(), out.resolve()  # absolute: the work happens in another directory
    prepared = out.with_suffix(".pre.onnx")
    # ONNX Runtime's shape inference saves temporary models (sym_shape_infer_temp.onnx and a
    # 130 MB <uuid>.data) in the current directory and leaves them there: work beside `out`.
    cwd = os.getcwd()
    os.chdir(out.parent)
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # dynamic batch
        quantize_static(
            str(prepared), str(out), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
    finally:
        os.chdir(cwd)


def ort_session(path: Path):  # noqa: ANN201
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def deployment(args: argparse.Namespace) -> None:
    """The ``--deploy`` measurements (see the module docstring), their files in ``--deploy-out``
    or in a scratch folder deleted afterwards."""
    import tempfile

    if args.deploy_out:
        deployment_in(args, Path(args.deploy_out))
        return
    with tempfile.TemporaryDirectory() as scratch:
        deployment_in(args, Path(scratch))


class Autocast(torch.nn.Module):
    """``model`` under CPU autocast to ``dtype``, float32 logits out: predict.py's default path
    on a CPU with native bf16."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=self.dtype):
            return self.model(x).float()


def deployment_in(args: argparse.Namespace, tmp: Path) -> None:
    from unet_scratch.data import parse_frames
    from unet_scratch.inference import default_temperature, load_run
    from unet_scratch.metrics import SegmentationMeter
    from unet_scratch.predict import main as predict_main

    model, config, _ = load_run(args.deploy)
    model = model.float().eval()
    size = config.input_size
    val_x, val_y = load_frames(args.data, parse_frames(args.val_frames), size)
    val_x = val_x.float() / 255
    train_frames = [n for n in range(1, 429) if n not in set(parse_frames(args.val_frames))][::10][:32]
    calibration = load_frames(args.data, train_frames, size)[0].float() / 255
    tmp.mkdir(parents=True, exist_ok=True)
    cpu_amp = amp_dtype(torch.device("cpu"), "auto")  # bf16 where the CPU has it: predict.py's default
    backends: dict[str, dict[tuple[int, int], object]] = {
        "PyTorch eager fp32": {},
        **({"PyTorch eager bf16": {}} if cpu_amp == torch.bfloat16 else {}),
        "ONNX Runtime fp32": {},
        "ONNX Runtime int8": {},
    }
    for h, w in ((size, size), (288, 384)):
        fp32, int8 = tmp / f"m{h}x{w}.onnx", tmp / f"m{h}x{w}.int8.onnx"
        # the run's temperature in the file, so predict.py --onnx on the kept files tempers as --run does
        export_onnx(model, h, fp32, width=w, temperature=default_temperature(config))
        calib = torch.nn.functional.interpolate(
            calibration, size=(h, w), mode="bilinear", align_corners=False
        )
        quantize_int8(fp32, int8, calib)
        backends["ONNX Runtime fp32"][(h, w)] = ort_session(fp32)
        backends["ONNX Runtime int8"][(h, w)] = ort_session(int8)
        backends["PyTorch eager fp32"][(h, w)] = model
        if "PyTorch eager bf16" in backends:
            backends["PyTorch eager bf16"][(h, w)] = Autocast(model, torch.bfloat16)

    def run(backend: object, x: torch.Tensor) -> torch.Tensor:
        if isinstance(backend, torch.nn.Module):
            with torch.inference_mode():
                return backend(x.contiguous(memory_format=torch.channels_last))
        return torch.from_numpy(backend.run(None, {"image": x.numpy()})[0])

    print(
        f"\ndeployment, {args.deploy} ({config.loss}, trained at {size}x{size}), "
        f"{torch.get_num_threads()} threads:"
    )
    print(f"{'backend':<22} {'input':<9} {'batch 1 img/s':>14} {'batch 32 img/s':>15} {'val mDice@0.5':>14}")
    g = torch.Generator().manual_seed(0)
    for name, by_size in backends.items():
        for (h, w), backend in by_size.items():
            rates = []
            for b in (1, 32):
                x = torch.rand(b, 3, h, w, generator=g)
                t = median_time(
                    lambda backend=backend, x=x: run(backend, x), torch.device("cpu"), args.steps, args.warmup
                )
                rates.append(b / t)
            dice = ""
            if (h, w) == (size, size):  # the validation frames at the size the model was trained on
                meter = SegmentationMeter()
                meter.update(
                    torch.cat(
                        [torch.sigmoid(run(backend, val_x[i : i + 16])) for i in range(0, len(val_x), 16)]
                    ),
                    val_y,
                )
                dice = f"{meter.summary()['dice']:.4f}"
            print(f"{name:<22} {h}x{w:<5} {rates[0]:>14.1f} {rates[1]:>15.1f} {dice:>14}")
        x = val_x[:8]
        gap = (run(by_size[(size, size)], x) - run(model, x)).abs().max().item()
        print(f"{'':<22} max |logit - PyTorch's| on 8 validation frames: {gap:.2e}")

    try:
        import av  # noqa: F401 - only to know whether video can run
    except ImportError:
        print("video: PyAV is not installed (pip install av, the [video] extra): skipped")
        return
    from unet_scratch.synthetic import write_video

    clip = write_video(tmp / "clip.mp4", frames=200)
    onnx = {k: str(tmp / f"m{size}x{size}{k}.onnx") for k in ("", ".int8")}
    videos = [
        (f"PyTorch {'bf16' if cpu_amp == torch.bfloat16 else 'fp32'}", 8, ["--run", args.deploy]),
        ("ONNX Runtime fp32", 8, ["--onnx", onnx[""]]),
        ("ONNX Runtime int8", 8, ["--onnx", onnx[".int8"]]),
        ("ONNX Runtime int8", 16, ["--onnx", onnx[".int8"]]),
    ]
    for label, batch, extra in videos:
        t = time.perf_counter()
        flags = [
            "--out",
            str(tmp / "video-out"),
            "--device",
            "cpu",
            "--overwrite",
            "--batch-size",
            str(batch),
        ]
        status = predict_main([*extra, str(clip), *flags])
        if status == INTERRUPTED:  # Ctrl-C: no next backend
            raise KeyboardInterrupt
        if status != 0:  # no frames/s of a run that failed
            print(f"video, predict.py end to end ({label}): failed (status {status}), see above")
            continue
        fps = 200 / (time.perf_counter() - t)
        verdict = "keeps up with" if fps >= 25 else "does not keep up with"
        print(
            f"video, predict.py end to end ({label}, 200 frames 384x288, batch {batch}): {fps:.1f} frames/s: "
            f"{verdict} 25 frames/s"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--skip-fp32", action="store_true", help="skip the (slow) fp32 baseline")
    p.add_argument("--skip-epoch", action="store_true", help="skip the full-epoch measurement")
    p.add_argument(
        "--compare-smp",
        action="store_true",
        help="also measure segmentation_models_pytorch.Unet('resnet50') when installed",
    )
    p.add_argument(
        "--data",
        help="a dataset folder: also time decoding + resizing frames 1-363 from disk, the work a "
        "DataLoader pipeline repeats every epoch (this project does it once and caches it)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="print the operators of the fast-path training step by time (torch.profiler)",
    )
    p.add_argument(
        "--conv-layers",
        action="store_true",
        help="time each distinct convolution's forward, input gradient and weight gradient apart",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also measure the fast path under torch.compile (training step and inference)",
    )
    p.add_argument("--deploy", help="a run folder: the deployment measurements (needs --data, --val-frames)")
    p.add_argument("--deploy-out", help="keep --deploy's ONNX models and video here (default: deleted)")
    p.add_argument(
        "--val-frames", default="364-428", help="validation frames of --deploy's run, for its Dice"
    )
    p.add_argument("--skip-train", action="store_true", help="skip the training-step and inference timings")
    args = p.parse_args(argv)
    if args.deploy:
        if not args.data:
            p.error("--deploy needs --data (the validation frames' dataset)")
        if args.skip_train:
            deployment(args)
            print(f"peak memory: {peak_memory_text(torch.device('cpu'))}")
            return 0

    device = pick_device(args.device)
    amp = amp_dtype(device, "auto")
    bs, size = args.batch_size, args.input_size
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"autocast {str(amp).replace('torch.', '')}, batch {bs}, input {size}x{size}"
    )

    results = {}
    fast = "fast path (autocast + channels_last + fused AdamW)"
    variants = [Variant(fast, amp)]
    if not args.skip_fp32:
        variants.insert(0, Variant("fp32 (NCHW, no autocast, Adam)", None, False, False))
    off = "--amp off path (fp32, channels_last, fused AdamW)"
    if device.type == "cpu" and amp == torch.bfloat16:
        # what `train.py --amp off` runs: --amp auto chooses bf16 on any CPU with native bf16,
        # and on some of them (an Intel Xeon without AMX) that is not faster than fp32
        variants.append(Variant(off, None))
        # the alternative to autocast: fp32 tensors everywhere, oneDNN rounds conv inputs to bf16
        label = "fp32 + oneDNN bf16 conv math (no autocast), CL, fused"
        variants.append(Variant(label, None, conv_bf16=True))
    if args.compile:
        variants.append(Variant("fast path + torch.compile", amp, compiled=True))
    models = [("unet-scratch", lambda: build_model(TrainConfig()))]
    if args.compare_smp:
        try:
            import segmentation_models_pytorch as smp

            models.append(
                ("smp Unet-resnet50", lambda: smp.Unet("resnet50", encoder_weights=None, classes=1))
            )
        except ImportError:
            print("segmentation_models_pytorch is not installed: --compare-smp skipped")
    # interleave models inside each variant so both see the same machine state
    for label, vamp, cl, fused, compiled, conv_bf16 in variants:
        for name, make in models:
            set_conv_bf16(conv_bf16)
            if compiled:  # the first call compiles: time it apart from the steps
                t = time.perf_counter()
                step, flops = make_step(make(), device, vamp, cl, bs, size, fused, compiled)
                step()
                print(f"torch.compile of the training step ({name}): {time.perf_counter() - t:.0f} s")
            else:
                step, flops = make_step(make(), device, vamp, cl, bs, size, fused)
            t = median_time(step, device, args.steps, args.warmup)
            set_conv_bf16(False)
            flops = flops or results.get((name, fast), (0, 0))[1]  # a compiled step: the eager count
            results[(name, label)] = (t, flops)
            gflops = flops / t / 1e9 if flops else float("nan")
            print(
                f"train step  {name:<18} {label:<52} {t:.3f} s/step  {bs / t:6.1f} img/s  "
                f"{flops / 1e9:6.1f} GFLOP/step  {gflops:7.1f} GFLOP/s"
            )

    if args.profile:
        print_profile(make_step(build_model(TrainConfig()), device, amp, True, bs, size)[0], device)
    if args.conv_layers:
        conv_layers(device, amp or torch.float32, bs, size, args.steps, args.warmup)

    if amp is not None:
        peak = matmul_peak(device, amp)
        t, flops = results[("unet-scratch", fast)]
        print(
            f"matmul peak ({str(amp).replace('torch.', '')}): {peak / 1e12:.2f} TFLOP/s; "
            f"fast-path training step reaches {100 * flops / t / peak:.1f} % of it"
        )
        if ("unet-scratch", off) in results:
            fp32_peak = matmul_peak(device, torch.float32)
            print(
                f"matmul peak (float32): {fp32_peak / 1e12:.2f} TFLOP/s; the fast path's step takes "
                f"{t / results[('unet-scratch', off)][0]:.2f}x the time of the --amp off path's"
            )

    inference = [(name, make, False) for name, make in models]
    if args.compile:
        inference += [(f"{name} compiled", make, True) for name, make in models]
    for name, make, compiled in inference:
        model = make().to(device, memory_format=torch.channels_last)
        model = torch.compile(model) if compiled else model
        for b in (1, 32):
            if compiled:  # compile for this batch size before timing
                t = time.perf_counter()
                predict(model, torch.zeros(b, 3, size, size, dtype=torch.uint8, device=device), amp, b)
                print(f"torch.compile of inference at batch {b} ({name}): {time.perf_counter() - t:.0f} s")
            images = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, device=device)

            def infer(model=model, images=images, b=b) -> object:
                return predict(model, images, amp, batch_size=b)

            t = median_time(infer, device, args.steps, args.warmup)
            print(f"inference   {name:<18} batch {b:<3} {b / t:8.1f} img/s")

    if not args.skip_epoch:
        config = TrainConfig()
        model = build_model(config).to(device, memory_format=torch.channels_last)
        optimizer = build_optimizer(model, config, device)
        ema = ModelEMA(model, config.ema) if config.ema else None
        g = torch.Generator().manual_seed(0)
        train = (
            torch.randint(0, 256, (363, 3, size, size), dtype=torch.uint8, generator=g).to(device),
            (torch.rand(363, 1, size, size, generator=g) > 0.8).to(torch.uint8).to(device),
        )
        val = (train[0][:65], train[1][:65])
        loss_fn = loss_for(config)
        for epoch in (1, 2):  # the first epoch includes one-time warm-up
            sync(device)
            t = time.perf_counter()
            r = train_one_epoch(
                model, *train, loss_fn, optimizer, config, epoch, amp, progress=False, ema=ema
            )
            evaluate(ema.module if ema is not None else model, *val, amp)
            sync(device)
            wall = time.perf_counter() - t
            print(
                f"full epoch {epoch} ({r.steps} steps of {bs} over 363 train frames, "
                f"augment {config.augment}, EMA {config.ema}, + 65 val frames): {wall:.1f} s wall, "
                f"{r.seconds / r.steps:.3f} s/step; 20 epochs ~ {20 * wall / 60:.1f} min"
            )
    if args.data:
        t = time.perf_counter()
        load_frames(args.data, list(range(1, 364)), size)  # no cache_dir: decode everything
        wall = time.perf_counter() - t
        print(f"decode + resize of frames 1-363 from {args.data} (no cache): {wall:.1f} s per pass")
    if args.deploy:
        deployment(args)
    print(f"peak memory: {peak_memory_text(device)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
