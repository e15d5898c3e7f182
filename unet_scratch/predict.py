"""``python predict.py``: segment your own images and videos with a trained run.

    python predict.py --run runs/combined frame.png more_frames/ --out predictions/
    python predict.py --run runs/combined colonoscopy.mp4 --out predictions/     # needs [video]
    python predict.py --onnx model.onnx frames/ --out predictions/                # ONNX Runtime
    python predict.py --run runs-s47/combined --run runs-s48/combined frames/     # an ensemble

Every image (``.tif``/``.tiff`` including the MinIsBlack-tagged RGB TIFFs of CVC-ClinicDB,
``.png``, ``.jpg``, ``.bmp``, ``.webp``; any size, any name) is prepared exactly as in training (bicubic
resize to the run's input size; the run's input normalisation is inside the model), and the
model's probabilities are resized back to the image's own height and width before thresholding
(inference.py). For ``NAME.ext`` it writes:

- ``NAME_mask.png``: the mask, 0 or 255, at the image's size;
- ``NAME_overlay.png``: the image with the polyp tinted and outlined;
- ``NAME_prob.png`` (``--probabilities``): the probability map as a 16-bit PNG (p * 65535).

Several ``--run`` are one model: the mean of their probabilities, each run with its own
temperature (inference.Ensemble; one forward pass per run, so it is that many times slower).
With ``--onnx`` the temperature is the one the file names (the export records its run's; 1 for
an exported ensemble, whose members are tempered inside), unless ``--temperature`` is given.

A video (``.mp4``, ``.avi``, ``.mov``, ``.mkv``) gives ``NAME_overlay.mp4`` (same size and frame
rate) and ``NAME_frames.csv`` (frame, time, polyp area %, max probability per frame); reading
and writing video needs PyAV (``pip install av``, the ``[video]`` extra).

A folder is read without the files in it named like predictions (``*_mask.png``, ...: an earlier
prediction or ground truth beside the frames; a note says how many). A file that cannot be read
is named in one line and skipped; the others are still written, and
the exit status is then 2 (``--strict``: stop at the first). An output folder that already
holds predictions is not overwritten without ``--overwrite``; ``--continue`` goes on with a
prediction that was stopped (Ctrl-C, a full disk, a kill): it checks that the model and flags
are those the prediction recorded in ``--out/.predict.log``, and skips the inputs it recorded
as finished (the same file, its files all there). An input's files are written as
one (files.atomic_write_all): a full disk leaves its earlier predictions all as they were; the
hidden temp files of a prediction killed half-way are removed by the next one that writes there.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image

from . import postprocess
from .config import AMP_MODES
from .data import EXTENSIONS, IMAGE_DIR, MASK_DIR, MEDIA_EXTENSIONS, VIDEO_EXTENSIONS, read_image
from .engine import amp_dtype, pick_device, precision_name, predict
from .errors import ArgumentParser, UserError, WriteFailed, exit_status, exit_with, listed
from .files import atomic_write_all, check_folder, make_folder, stale_temps
from .inference import (
    OnnxModel,
    add_mask_options,
    checkpoint_path,
    load_runs,
    mask_options,
    onnx_path,
    prepare,
    temper,
    to_size,
)
from .progress import Progress, counted
from .report import outline_overlay

IMAGE_OUTPUTS = ("_mask.png", "_overlay.png", "_prob.png")  # NAME + suffix, for each image
VIDEO_OUTPUTS = ("_overlay.mp4", "_frames.csv")  # for each video
OUTPUT_SUFFIXES = IMAGE_OUTPUTS + VIDEO_OUTPUTS
# in --out, for --continue: the settings of the prediction last started there (a JSON first
# line, written with its first input's files), then one JSON line per input whose files it wrote:
# [NAME, the input file's stamp (file_stamp)]
RECORD = ".predict.log"


class Segmenter:
    """A trained model ready for frames of any size: ``probabilities(images)`` takes a list of
    ``(H, W, 3)`` uint8 images and returns one ``(H, W)`` float32 probability map per image."""

    def __init__(
        self,
        run: str | list[str] | None,
        onnx: str | None,
        device: str = "auto",
        amp: str = "auto",
        tta: bool = False,
        batch_size: int = 8,
        temperature: float | None = None,
    ) -> None:
        label = ""
        if onnx:
            self.model: torch.nn.Module = OnnxModel(onnx)
            self.size, self.device, self.amp = self.model.input_size, torch.device("cpu"), None
            # the file decides the arithmetic (fp32, or int8 where bench.py --deploy quantised it)
            self.source = f"{onnx} (ONNX Runtime, cpu)"
            if temperature is None:  # the run's, as the export recorded it (read and checked once)
                temperature = self.model.temperature
                # None: exported elsewhere, or before the export recorded it; 1 below
                label = "1 (the file names none)" if temperature is None else f"{temperature:g} (the file's)"
        else:
            runs = [run] if isinstance(run, str) else list(run)
            self.device = pick_device(device)
            given = temperature
            model, configs, _, temperature = load_runs(runs, temperature)
            files = [str(checkpoint_path(r)) for r in runs]  # what was read: runs/dice/best.pt
            what = f"{files[0]} ({configs[0].loss} loss"
            if len(runs) > 1:  # the members' temperatures apply inside, before the mean
                label = " ".join(f"{t:g}" for t in model.temperatures) + " (each run's, before the mean"
                label += ")" if given is None else f"), then {given:g} on the mean"
                losses = ", ".join(dict.fromkeys(c.loss for c in configs))
                what = f"ensemble of {len(runs)} ({', '.join(files)}; {losses} loss"
            self.model = model.to(self.device, memory_format=torch.channels_last)
            self.size, self.amp = configs[0].input_size, amp_dtype(self.device, amp)
            # the precision as train.py's first line names it: --amp auto decides by the device
            self.source = f"{what}, {self.size}x{self.size}, {self.device} {precision_name(self.amp)})"
        if temperature is None:
            temperature = 1.0
        self.tta, self.batch_size, self.temperature = tta, batch_size, temperature
        self.temperature_label = label or f"{temperature:g}"  # what the header line says

    def probabilities(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        batch = torch.stack([prepare(image, self.size) for image in images])  # (B, 3, S, S) uint8
        probs = predict(self.model, batch, self.amp, self.batch_size, tta=self.tta).cpu()  # (B, 1, S, S)
        # back to each image's size, then the temperature: the 0.5 contour stays where it was
        sized = [to_size(p[None], *image.shape[:2]) for p, image in zip(probs, images)]
        return [temper(p, self.temperature)[0, 0] for p in sized]


# ----------------------------------------------------------------------------- inputs, outputs


def _shown(files: list[Path]) -> str:
    return listed([f.name for f in files], most=2)


def _folders(folders: list[Path]) -> str:
    return listed([f"{f}/" for f in folders], most=2)


def collect_inputs(paths: list[str], out: Path) -> tuple[list[Path], list[str], list[Path], list[Path]]:
    """The image and video files named or found in the folders named (sorted, not recursive),
    each file once whatever its spelling (``a/1.tif`` and ``a/``); one problem line per input that
    is none (missing, not an image, a folder without images); the files left out of folders
    because their names are those of predictions (``12_mask.png``, ``12_overlay.png``: an earlier
    prediction into that folder, or ground truth beside the frames), which would otherwise be
    segmented as frames; and the sub-folders of the folders named, which are not read (for a
    note: a video's frames in ``clip/frames/`` are not segmented unless named), each once, without
    those named too and ``out``, the output folder. A file named on its own is always segmented."""
    files: list[Path] = []
    problems: list[str] = []
    subfolders: list[Path] = []
    outputs: dict[tuple[int, int], Path] = {}  # the left-out files, each once
    seen: set[tuple[int, int]] = set()  # (device, inode) of every file in ``files``

    def identity(f: Path) -> tuple[int, int] | None:
        try:
            st = f.stat()
        except OSError:  # gone since the folder was listed, or a broken link
            return None
        return st.st_dev, st.st_ino

    def add(f: Path) -> None:
        key = identity(f)
        if key is None:
            problems.append(f"{f} does not exist: check the path")
        elif key not in seen:
            files.append(f)
            seen.add(key)

    # sub-folders never left out: those named as inputs too, and the output folder (predictions/
    # beside the frames); and those noted already (a folder named twice, a/ and a/.)
    noted = {identity(q) for q in [*map(Path, paths), out]} - {None}
    for p in map(Path, paths):
        if p.is_dir():
            # not hidden files: macOS's ._1.png beside 1.png is metadata, not an image
            entries = sorted(e for e in p.iterdir() if not e.name.startswith("."))
            found = [f for f in entries if f.is_file() and f.suffix.lower() in MEDIA_EXTENSIONS]
            inside = [d for d in entries if d.is_dir() and identity(d) not in noted]
            if not found:
                dataset = p / IMAGE_DIR  # a dataset folder (Original/ + Ground Truth/)
                hint = f": its frames are in {dataset}, give that" if dataset.is_dir() else ""
                if inside and not hint:
                    hint = f": sub-folders are not read, name one ({_folders(inside)})"
                problems.append(f"{p}: no image or video files in this folder{hint}")
            else:
                subfolders += inside
                noted |= {identity(d) for d in inside}
            for f in found:
                if not f.name.lower().endswith(OUTPUT_SUFFIXES):
                    add(f)
                elif (key := identity(f)) is not None:  # one gone since the listing: nothing to say
                    outputs.setdefault(key, f)
        elif not p.exists():
            problems.append(f"{p} does not exist: check the path")
        elif p.suffix.lower() not in MEDIA_EXTENSIONS:
            problems.append(f"{p}: not an image or video ({', '.join(MEDIA_EXTENSIONS)})")
        else:
            add(p)
    return files, problems, [f for key, f in outputs.items() if key not in seen], subfolders


def output_names(files: list[Path]) -> dict[Path, str]:
    """``NAME`` of each output, unique so that no input's outputs overwrite another's: the file's
    stem; ``stem_ext`` where inputs share a stem; ``folder_stem_ext`` where they share that too
    (the same name in two folders); then ``_2``, ``_3`` ... in input order if still needed."""
    levels = [
        [f.stem for f in files],
        [f"{f.stem}_{f.suffix.lstrip('.').lower()}" for f in files],
        [f"{f.parent.name}_{f.stem}_{f.suffix.lstrip('.').lower()}" for f in files],
    ]
    counts = [Counter(level) for level in levels]
    names, used = {}, set()
    for i, f in enumerate(files):  # the shortest name no other input would also get
        name = next((level[i] for level, count in zip(levels, counts) if count[level[i]] == 1), levels[-1][i])
        unique, k = name, 1
        while unique in used:  # whatever still collides (the same folder and file name twice)
            k += 1
            unique = f"{name}_{k}"
        names[f] = unique
        used.add(unique)
    return names


def is_inputs_folder(out: Path, files: list[Path]) -> bool:
    """Whether ``out`` is a folder the inputs ``files`` are read from: the same folder by its
    inode, whatever the spelling (relative, a link, another case)."""
    here = out.stat() if out.is_dir() else None
    return here is not None and any(os.path.samestat(here, d.stat()) for d in {f.parent for f in files})


def targets(f: Path, name: str, out: Path, probabilities: bool) -> list[Path]:
    """The files the prediction of input ``f`` (outputs named ``name``) writes into ``out``."""
    video = f.suffix.lower() in VIDEO_EXTENSIONS
    suffixes = VIDEO_OUTPUTS if video else IMAGE_OUTPUTS if probabilities else IMAGE_OUTPUTS[:2]
    return [out / f"{name}{suffix}" for suffix in suffixes]


def check_outputs(files: list[Path], names: dict[Path, str], out: Path, probabilities: bool) -> None:
    """Raise :class:`UserError` when ``out`` is a folder the inputs are read from and an output
    would replace a file there: a ground-truth ``12_mask.png`` beside ``12.png``, or an input.
    Nothing tells such a file from an earlier prediction, so beside the inputs no file is ever
    replaced, ``--overwrite`` or not."""
    if not is_inputs_folder(out, files):
        return
    for f in files:
        for target in targets(f, names[f], out, probabilities):
            if target.exists():
                raise UserError(
                    f"--out {out} is the inputs' folder and holds {target.name}, which {f.name}'s prediction "
                    "would replace: files beside the inputs are never replaced, --overwrite or not; "
                    "choose another --out"
                )


def problem_line(problem: str, strict: bool) -> str:
    """A bad input's stderr line, and what became of the run: skipped, or (``--strict``) stopped."""
    return f"error: {problem} ({'stopped: --strict' if strict else 'skipped'})"


def is_gray(image: np.ndarray) -> bool:
    """Whether ``image (H, W, 3)`` has no colour: its three channels equal everywhere."""
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def write_image_outputs(
    out: Path,
    name: str,
    image: np.ndarray,
    prob: torch.Tensor,
    args: argparse.Namespace,
    removed: list[Path] | None = None,
) -> float:
    """Write the mask, the overlay and optionally the 16-bit probability map; returns the polyp
    area in % of the frame. With ``removed`` (a list: --overwrite away from the inputs), an
    earlier probability map this run does not write is removed and listed there."""
    mask = postprocess.apply((prob > args.threshold).numpy(), args.steps)
    pictures = {
        "_mask.png": Image.fromarray(mask.astype(np.uint8) * 255),
        "_overlay.png": Image.fromarray(outline_overlay(image, mask)),
    }
    if args.probabilities:
        pictures["_prob.png"] = Image.fromarray((prob.numpy() * 65535).round().astype(np.uint16))
    # written as one: a full disk leaves this image's earlier files all as they were, never a
    # new mask beside an old overlay
    atomic_write_all([(out / f"{name}{end}", partial(p.save, format="PNG")) for end, p in pictures.items()])
    prob_png = out / f"{name}_prob.png"
    if not args.probabilities and removed is not None and prob_png.is_file():
        prob_png.unlink()  # an earlier run's, which would disagree with the mask
        removed.append(prob_png)
    return 100.0 * float(mask.mean())


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def segment_images(
    segmenter: Segmenter,
    files: list[Path],
    names: dict[Path, str],
    args: argparse.Namespace,
    say: callable,
    removed: list[Path] | None = None,
    record: Callable[[Path, str], None] = lambda f, name: None,
) -> tuple[int, list[str]]:
    """Segment the image files in batches; returns (images written, problem lines).
    ``removed``: see :func:`write_image_outputs`; ``record(f, NAME)`` after each image's files."""
    done, problems = 0, []
    bar = Progress(len(files), "predict")
    for chunk in _chunks(files, args.batch_size):
        images, kept, stop = [], [], False
        for f in chunk:
            try:
                images.append(read_image(f, upright=True))
                kept.append(f)
            except UserError as e:
                problems.append(str(e))
                say(problem_line(str(e), args.strict), err=True)
                if args.strict:  # the files before it are still segmented, whatever --batch-size
                    stop = True
                    break
        for f, image, prob in zip(kept, images, segmenter.probabilities(images) if images else []):
            area = write_image_outputs(Path(args.out), names[f], image, prob, args, removed)
            record(f, names[f])
            done += 1
            height, width = image.shape[:2]
            renamed = f" -> {names[f]}_*.png" if names[f] != f.stem else ""  # another input shares its name
            peak = float(prob.max())
            # read as three equal channels: the model learnt from colour, where a polyp is redder
            gray = "; grayscale: the model was trained on colour frames" if is_gray(image) else ""
            say(f"{f}: {width}x{height}, polyp {area:.1f} % of the frame, max p {peak:.2f}{gray}{renamed}")
            bar.update(done + len(problems), done)
        if stop:
            break
    bar.close()
    return done, problems


def segment_video(
    segmenter: Segmenter, path: Path, name: str, args: argparse.Namespace, say: callable
) -> int:
    """Overlay video of the same size and frame rate, and a per-frame CSV; returns the frames."""
    try:
        import av
    except ImportError as e:
        raise UserError(
            f"{path}: reading video needs PyAV: pip install av (the [video] extra)"
        ) from e
    out = Path(args.out)
    try:
        source = av.open(str(path))
    except av.FFmpegError as e:
        raise UserError(f"{path} cannot be read as a video ({e}): replace the file") from e
    if not source.streams.video:
        source.close()
        raise UserError(f"{path} holds no video stream (audio only?): nothing to segment")
    stream = source.streams.video[0]
    rate = stream.average_rate or 25
    width, height = stream.codec_context.width, stream.codec_context.height
    declared = stream.frames  # a count the container declares (AVI, MP4; 0 in Matroska)
    if declared and stream.duration and "mp4" in source.format.name:  # "mov,mp4,m4a,...": MP4, MOV
        # an MP4 whose edit list starts it a few frames in (a clip cut without re-encoding) stores
        # more frames than it shows, and players show what its duration spans: so does decoding.
        # (An AVI's duration counts only the frames its index still finds: not for AVI.)
        declared = min(declared, round(float(stream.duration * stream.time_base * rate)))
    rows, frames = [], 0

    def write(f: IO[bytes]) -> None:  # into atomic_write's temp file: no half video is left behind
        nonlocal frames
        sink = av.open(f, "w", format="mp4")
        encoder = sink.add_stream("libx264", rate=rate)
        # 4:2:0, the chroma layout every player plays (browsers and QuickTime refuse H.264 4:4:4),
        # needs even sizes: an odd frame gets its last row or column repeated
        encoder.width, encoder.height = width + width % 2, height + height % 2
        encoder.pix_fmt = "yuv420p"
        odd = height % 2 or width % 2
        pad = ((0, height % 2), (0, width % 2), (0, 0))
        encoder.options = {"preset": "veryfast"}  # a live overlay: speed over file size

        def flush(batch: list[np.ndarray], times: list[float]) -> None:
            nonlocal frames
            for image, t, prob in zip(batch, times, segmenter.probabilities(batch)):
                mask = postprocess.apply((prob > args.threshold).numpy(), args.steps)
                rows.append([frames, f"{t:.3f}", f"{100.0 * mask.mean():.3f}", f"{float(prob.max()):.4f}"])
                overlay = outline_overlay(image, mask)
                if odd:  # a copy of the frame, only where one is needed
                    overlay = np.pad(overlay, pad, mode="edge")
                frame = av.VideoFrame.from_ndarray(overlay, format="rgb24")
                for packet in encoder.encode(frame):
                    sink.mux(packet)
                frames += 1

        try:
            batch, times = [], []
            for decoded, frame in enumerate(source.decode(stream)):
                batch.append(frame.to_ndarray(format="rgb24"))
                # a frame without a timestamp: its place in the stream, not the frames written so far
                times.append(float(frame.time) if frame.time is not None else decoded / float(rate))
                if len(batch) == args.batch_size:
                    flush(batch, times)
                    batch, times = [], []
            if batch:
                flush(batch, times)
            for packet in encoder.encode():
                sink.mux(packet)
        except av.FFmpegError as e:
            raise UserError(f"{path}: decoding failed after {frames} frames ({e})") from e
        finally:
            sink.close()

    def write_csv(f: IO[bytes]) -> None:  # after write(), which filled ``rows``
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(["frame", "time_s", "polyp_area_pct", "max_prob"])
        writer.writerows(rows)
        text.flush()
        text.detach()  # ``f`` stays open for atomic_write_all's fsync

    try:
        # both renamed into place once both are written: a CSV that cannot be written leaves the
        # previous video and CSV as they were, not a new video beside the old CSV
        atomic_write_all([(out / f"{name}_overlay.mp4", write), (out / f"{name}_frames.csv", write_csv)])
    finally:
        source.close()
    say(
        f"{path}: {frames} frames {width}x{height} at {float(rate):.2f} fps "
        f"-> {name}_overlay.mp4, {name}_frames.csv"
    )
    if 0 < frames < declared:
        say(
            f"warning: {path}: {frames} of the {declared} frames its header declares could be "
            "decoded: the file may be truncated (the frames decoded are written)",
            err=True,
        )
    return frames


def file_stamp(path: Path) -> str:
    """A file as the record names it: its resolved path, size and modification time (not a hash:
    a 130 MB checkpoint or a video read for a name)."""
    st = path.stat()
    return f"{path.resolve()} ({st.st_size} bytes, modified {st.st_mtime_ns} ns)"


def prediction_settings(args: argparse.Namespace) -> dict[str, object]:
    """What decides a prediction's files (the record --continue checks): the model files, the
    precision they run in and the flags that change a mask, an overlay or a map. Not the device:
    a prediction stopped on one machine may go on on another, in the same precision."""
    models = [checkpoint_path(r) for r in args.run] if args.run else [onnx_path(args.onnx)]
    # bf16 or fp16 moves pixels near the threshold: a map half fp32, half bf16 is two predictions
    precision = precision_name(amp_dtype(pick_device(args.device), args.amp)) if args.run else "ONNX file"
    return {
        "model": [file_stamp(m) for m in models],
        "precision": precision,
        "threshold": args.threshold,
        "temperature": args.temperature,
        "postprocess": [list(step) for step in args.steps],
        "tta": args.tta,
        "probabilities": args.probabilities,
    }


def read_record(out: Path) -> tuple[dict[str, object], dict[str, str]] | None:
    """The record in ``out`` (see ``RECORD``): its header and ``{NAME: the input's file_stamp}`` of the
    inputs it finished; None without one. A last line cut by a kill is left out."""
    try:
        lines = (out / RECORD).read_text().splitlines()
        header = json.loads(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    finished = {}
    for line in lines[1:]:
        try:
            name, source = json.loads(line)
        except (ValueError, TypeError):
            continue
        finished[name] = source
    return (header, finished) if isinstance(header, dict) else None


def finished_inputs(
    files: list[Path], names: dict[Path, str], out: Path, settings: dict[str, object], probabilities: bool
) -> tuple[list[Path], dict[str, object] | None]:
    """``--continue``: the inputs among ``files`` that the prediction recorded in ``out`` finished
    (the same file under the same name, its files all there), and the record's header; none and
    None where ``out`` holds no record and no output of these inputs (nothing to go on with: a
    new prediction). Raises :class:`UserError` when the record's settings differ, or outputs of
    these inputs are there without a record."""
    record = read_record(out)
    if record is None:
        if any(t.exists() for f in files for t in targets(f, names[f], out, probabilities)):
            raise UserError(
                f"--continue: {out} holds predictions of these inputs but no record of the prediction "
                f"that wrote them ({RECORD}): --overwrite to predict them again, or another --out"
            )
        return [], None
    header, finished = record
    recorded = header.get("settings") if isinstance(header.get("settings"), dict) else {}
    # a setting a record does not name (one older than the setting) is not held against it; the
    # model, which every record names, is
    differ = [
        f"{k}: {recorded.get(k)!r} there, {v!r} here"
        for k, v in settings.items()
        if recorded.get(k, None if k == "model" else v) != v
    ]
    if differ:
        raise UserError(
            f"--continue: the prediction last started in {out} had other settings ({'; '.join(differ)}): "
            "give its model and flags, or --overwrite to predict these inputs again"
        )

    def done(f: Path) -> bool:  # the file recorded under its name, and every file of it there
        there = all(t.exists() for t in targets(f, names[f], out, probabilities))
        return there and finished.get(names[f]) == file_stamp(f)

    return [f for f in files if done(f)], header


class Record:
    """Appends an input to the record once its files are written (:func:`read_record`); the
    first one also starts the record (truncating an earlier prediction's) unless ``header`` is
    None, a continued record."""

    def __init__(self, out: Path, header: dict[str, object] | None) -> None:
        self.path, self.header = out / RECORD, header

    def __call__(self, f: Path, name: str) -> None:
        try:
            with open(self.path, "w" if self.header is not None else "a") as log:
                if self.header is not None:
                    log.write(json.dumps(self.header) + "\n")
                    self.header = None
                log.write(json.dumps([name, file_stamp(f)]) + "\n")
        except OSError as e:  # a full disk: the input's files are written, only --continue would redo it
            raise WriteFailed(
                f"cannot write {self.path} ({e.strerror or e}): free disk space or write elsewhere (--out)"
            ) from e


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="predict.py",
        description="Segment images or videos with a trained run: masks and overlays at each input's size.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, or folders of them")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--run",
        action="append",
        help="a run folder (its best.pt is used), e.g. runs/combined, or a checkpoint file train.py "
        "wrote (best.pt, last.pt: its weight average, or a copy under another name); given more than "
        "once, the runs' probabilities are averaged (an ensemble)",
    )
    source.add_argument(
        "--onnx",
        help="an exported ONNX model (python -m unet_scratch.export), run by ONNX Runtime; the "
        "temperature it names is applied unless --temperature is given",
    )
    p.add_argument("--out", default="predictions", help="folder for the outputs")
    add_mask_options(p, "probability above which a pixel is polyp")
    p.add_argument(
        "--probabilities", action="store_true", help="also write NAME_prob.png (16-bit, p * 65535)"
    )
    p.add_argument("--tta", action="store_true", help="average the probabilities of the 4 flip variants")
    p.add_argument("--batch-size", type=int, default=8, help="images (or video frames) per forward pass")
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (--run only; --onnx runs on the CPU)"
    )
    p.add_argument(
        "--amp", default="auto", choices=AMP_MODES, help="mixed precision (--run only; --onnx runs in fp32)"
    )
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable file")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that already holds predictions; an input's earlier NAME_prob.png that "
        "this run does not write is removed",
    )
    existing.add_argument(
        "--continue",
        dest="resume",
        action="store_true",
        help="go on with a prediction into --out that was stopped, with its model and flags (checked): "
        "the inputs it finished are skipped, the others predicted",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    # asked for, and not to be had: ONNX Runtime runs here on its CPU provider, in fp32
    if args.onnx and (args.device not in ("auto", "cpu") or args.amp not in ("auto", "off")):
        given = f"--device {args.device}" if args.device not in ("auto", "cpu") else f"--amp {args.amp}"
        raise UserError(
            f"{given} applies to --run (PyTorch): --onnx runs on ONNX Runtime's CPU provider in fp32; "
            "drop it, or give the run with --run"
        )
    args.steps = mask_options(args)
    # not into a dataset's frames or masks, however reached (a link): its pairs would gain files
    data = [Path(os.path.realpath(args.out)).parent / d for d in (IMAGE_DIR, MASK_DIR)]
    out = check_folder(args.out, "--out", keep_out=data if all(d.is_dir() for d in data) else ())
    files, problems, left_out, subfolders = collect_inputs(args.inputs, out)
    names = output_names(files)  # of every input: a stopped run's names, whatever --continue skips
    # the model's path before what the output folder holds: "already holds predictions" is not to
    # send the user to --overwrite only to learn next that --run was misspelt
    done, settings, continued = [], prediction_settings(args) if args.resume else None, None
    if settings is not None:
        done, continued = finished_inputs(files, names, out, settings, args.probabilities)
        finished = set(done)
        files = [f for f in files if f not in finished]
    check_outputs(files, names, out, args.probabilities)  # before the model is read
    settings = settings or prediction_settings(args)
    if out.is_dir() and not (args.overwrite or args.resume):
        held = sorted(f.name for f in out.iterdir() if f.name.lower().endswith(OUTPUT_SUFFIXES))
        # which are under these inputs' names (replaced by --overwrite; a probability map too, removed
        # when this run writes none, except beside the inputs) and which under other names (left alone)
        prob = args.probabilities or not is_inputs_folder(out, files)
        mine = [t.name for f in files for t in targets(f, names[f], out, prob) if t.exists()]
        if mine:
            raise UserError(
                f"{out} already holds predictions under these inputs' names ({listed(mine, most=2)}): "
                "--overwrite replaces them, --continue goes on with a stopped prediction; or another --out"
            )
        if held:
            raise UserError(
                f"{out} already holds other predictions ({listed(held, most=2)}): --overwrite writes these "
                "beside them, replacing none; or another --out"
            )
    if not files and len(problems) == 1 and not left_out and not done:  # the one input named: all there is
        raise UserError(f"{problems[0]}; nothing to segment")
    for line in problems:
        print(problem_line(line, args.strict), file=sys.stderr)
    if problems and args.strict:
        return 2
    if done and not files:
        readable = " that could be read" if problems else ""
        every = f"{out} holds the files of every input{readable}, {counted(len(done), 'input')}"
        print(f"nothing left to predict (--continue): {every}")
        return 2 if problems else 0
    if not files and left_out:
        raise UserError(
            f"nothing to segment: the files found are named like predictions ({_shown(left_out)}): "
            "name one on its own to segment it"
        )
    if not files:
        raise UserError(
            "nothing to segment: every input was skipped (named above)"
            if problems
            else "no image or video files to segment: name files or folders of .tif/.png/.jpg/.bmp/.webp/.mp4"
        )
    segmenter = Segmenter(
        args.run, args.onnx, args.device, args.amp, args.tta, args.batch_size, args.temperature
    )
    made = [f for f in [out, *out.parents] if not f.exists()]  # deepest first, as rmdir needs them
    make_folder(out, "--out")
    # a new record (with the first input's files), or the continued one's lines
    record = Record(out, None if continued else {"settings": settings, "overwrite": args.overwrite})
    removed_temps = []
    # hidden, and a half-written video is as large as the frames it holds: what a prediction
    # killed half-way (kill -9, a power cut) left here is removed, not left to pile up
    for tmp in stale_temps(out, OUTPUT_SUFFIXES):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed_temps.append(tmp)
    if removed_temps:
        print(
            f"note: removed {counted(len(removed_temps), 'temp file')} that a prediction killed while "
            f"writing left in {out} ({_shown(removed_temps)})",
            file=sys.stderr,
        )
    if done:
        print(
            f"note: skipped {counted(len(done), 'input')} whose files are all in {out} already "
            f"({_shown(done)}; --continue)",
            file=sys.stderr,
        )
    if subfolders:
        print(
            f"note: left out {counted(len(subfolders), 'sub-folder')} of the folders given "
            f"({_folders(subfolders)}): folders are not read recursively; name one to segment it",
            file=sys.stderr,
        )
    if left_out:  # once the model is read: an error before it stays one line
        print(
            f"note: left out {counted(len(left_out), 'file')} named like predictions ({_shown(left_out)}); "
            "name a file on its own to segment it",
            file=sys.stderr,
        )

    def say(line: str, err: bool = False) -> None:
        print(line, file=sys.stderr if err else sys.stdout, flush=True)

    print(
        f"model: {segmenter.source}; threshold {args.threshold}, temperature {segmenter.temperature_label}, "
        f"TTA {'on' if args.tta else 'off'}"
    )
    start = time.perf_counter()
    images = [f for f in files if f.suffix.lower() in EXTENSIONS]
    if args.probabilities and len(images) < len(files):
        say(
            "note: --probabilities writes maps for images; a video's CSV has each frame's largest "
            "probability instead",
            err=True,
        )
    # an input's predictions are replaced, all of them, once its new ones are written (an input
    # that fails keeps its old ones whole); beside the inputs nothing is ever removed
    overwrite = args.overwrite or bool(continued and continued.get("overwrite"))  # what is continued
    replace = overwrite and not args.probabilities and not is_inputs_folder(out, files)
    removed: list[Path] | None = [] if replace else None
    written, bad = segment_images(segmenter, images, names, args, say, removed, record)
    if removed:
        say(
            f"note: removed {_shown(removed)}: an earlier prediction's, which this one does not write "
            "(--overwrite)",
            err=True,
        )
    problems += bad
    frames = 0
    for video in (f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS):
        if bad and args.strict:
            break
        try:
            frames += segment_video(segmenter, video, names[video], args, say)
            record(video, names[video])
        except WriteFailed:  # the disk, not the video: the next input would fail the same way
            raise
        except UserError as e:
            problems.append(str(e))
            say(problem_line(str(e), args.strict), err=True)
            if args.strict:
                break
    seconds = time.perf_counter() - start
    parts = []
    if images:
        parts.append(
            f"{counted(written, 'image')} in {seconds:.1f} s ({written / seconds:.1f} img/s)"
            if written
            else "no image written"
        )
    if frames:
        parts.append(
            f"{frames} video frames ({frames / seconds:.1f} frames/s end to end: decode, model, encode)"
        )
    if problems and args.strict:
        parts.append("stopped at the first unreadable input (--strict; named above)")
    elif problems:
        parts.append(f"{counted(len(problems), 'input')} skipped (named above)")
    if not written and not frames:  # every input failed: leave no empty folders behind
        for folder in made:
            try:
                folder.rmdir()  # only if empty: something written there meanwhile stays
            except OSError:
                break
    print("; ".join(parts) + (f" -> {out}/" if out.is_dir() else ""))
    return 2 if problems else 0


if __name__ == "__main__":
    exit_with(main())
