"""Procedural colonoscopy-like frames with polyps, in the CVC-ClinicDB folder layout.

Each frame: a reddish mucosa texture (low-frequency colour noise + fine grain + dark folds),
a vignette, one or more elliptical polyps (a shaded dome, slightly pinker and brighter than the
wall, with a soft rim), and specular highlights. The mask is the union of the polyp ellipses.
Frame ``n`` depends only on ``(seed, n)``, so any subset can be generated alone and two calls
give the same pixels.

Images are written as the published dataset stores them (RGB TIFF tagged MinIsBlack,
3 samples per pixel, 16-row strips, which Pillow refuses), masks as 8-bit grayscale TIFF.

    python -m unet_scratch.synthetic OUT --count 60          # a dataset folder
    python -m unet_scratch.synthetic clip.mp4 --count 50    # the same frames as a video (PyAV)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image

from .data import IMAGE_DIR, MASK_DIR, VIDEO_EXTENSIONS
from .errors import ArgumentParser, UserError, exit_status, exit_with
from .files import atomic_write, check_folder

HEIGHT, WIDTH = 288, 384  # the real frames' size
SYNTHETIC_VERSION = 1


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid, bicubically upsampled."""
    ch = max(2, cells * h // w)
    coarse = rng.uniform(0, 255, size=(ch, cells, channels)).astype(np.uint8)
    big = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse).resize(
        (w, h), Image.Resampling.BICUBIC
    )
    a = np.asarray(big, np.float32).reshape(h, w, channels)
    return a / 127.5 - 1


def make_frame(
    n: int, seed: int = 0, height: int = HEIGHT, width: int = WIDTH
) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``n``: ``image (H, W, 3) uint8`` RGB and ``mask (H, W) uint8`` in {0, 255}."""
    rng = np.random.default_rng([seed, n])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    # mucosa: a reddish base colour per frame, colour blotches, grain and a few dark folds
    base = np.array([rng.uniform(150, 200), rng.uniform(60, 95), rng.uniform(50, 80)], np.float32)
    shade = 1 + 0.2 * _smooth_noise(rng, height, width, 8, 1)
    img = base * shade + 8 * _smooth_noise(rng, height, width, 6, 3)
    img += rng.normal(0, 4, (height, width, 3))
    for _ in range(rng.integers(1, 4)):
        angle, phase, freq = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi), rng.uniform(0.01, 0.03)
        band = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
        img *= (1 - 0.25 * np.clip(band, 0, 1) ** 4)[..., None]

    # polyps: shaded ellipses, brighter and pinker towards their top
    mask = np.zeros((height, width), bool)
    for _ in range(1 if rng.random() < 0.8 else 2):
        a = rng.uniform(0.05, 0.22) * width  # semi-axes in pixels
        b = a * rng.uniform(0.6, 1.0)
        cy, cx = rng.uniform(b, height - b), rng.uniform(a, width - a)
        theta = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)) / a
        v = (-(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)) / b
        r2 = u**2 + v**2
        inside = r2 <= 1
        dome = np.sqrt(np.clip(1 - r2, 0, 1))
        tint = np.array([rng.uniform(10, 40), rng.uniform(15, 40), rng.uniform(10, 30)], np.float32)
        light = 0.75 + 0.35 * dome - 0.15 * np.clip(v, -1, 1)  # lit from above
        texture = 1 + 0.08 * _smooth_noise(rng, height, width, 24, 1)
        polyp = (base + tint) * light[..., None] * texture
        rim = np.clip((r2 - 0.85) / 0.15, 0, 1)[..., None]  # darker outline
        polyp *= 1 - 0.25 * rim
        img = np.where(inside[..., None], polyp, img)
        mask |= inside

    # vignette and specular highlights (on the wall and on the polyps)
    r = np.hypot((xx - width / 2) / (width / 2), (yy - height / 2) / (height / 2))
    img *= (1 - 0.45 * np.clip(r - 0.3, 0, None) ** 1.5)[..., None]
    for _ in range(rng.integers(2, 8)):
        sy, sx, sr = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(1.5, 5)
        spot = np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / (2 * sr**2))
        img = img + 255 * spot[..., None]
    # the endoscope's dark octagonal frame, as in the real videos
    cut = 0.28 * height
    margin = np.minimum.reduce(
        [xx - 0.1 * width, 0.9 * width - 1 - xx, yy - 0.04 * height, 0.96 * height - 1 - yy]
    )
    corner = (
        np.minimum.reduce([xx + yy, (width - xx) + yy, xx + (height - yy), (width - xx) + (height - yy)])
        - 0.1 * width
        - cut
    )
    img = np.where(((margin < 0) | (corner < 0))[..., None], 12.0, img)
    mask &= (margin >= 0) & (corner >= 0)
    image = np.clip(img, 0, 255).astype(np.uint8)
    return image, mask.astype(np.uint8) * 255


def write_dataset(out: str | Path, frames: list[int] | range, seed: int = 0, compress: bool = True) -> Path:
    """Write ``Original/N.tif`` and ``Ground Truth/N.tif`` for each ``n`` in ``frames``.

    ``compress=True`` stores zlib-compressed TIFFs (a quarter of the size); False writes the
    uncompressed files of the public download. Pixels are the same either way.
    """
    out = Path(out)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (out / MASK_DIR).mkdir(parents=True, exist_ok=True)
    compression = "zlib" if compress else None
    for n in frames:
        image, mask = make_frame(n, seed)
        tifffile.imwrite(
            out / IMAGE_DIR / f"{n}.tif",
            image,
            photometric="minisblack",
            planarconfig="contig",
            rowsperstrip=16,
            compression=compression,
        )
        tifffile.imwrite(out / MASK_DIR / f"{n}.tif", mask, compression=compression)
    return out


def write_video(
    path: str | Path | BinaryIO,
    frames: int,
    height: int = 288,
    width: int = 384,
    rate: int = 25,
    seed: int = 0,
) -> str | Path | BinaryIO:
    """Write synthetic frames ``1..frames`` as an H.264 clip in MP4 (needs PyAV, the ``[video]``
    extra) to a file name or an open binary file (then left open): a video to run predict.py on
    in tests and benchmarks, no recording needed. Returns ``path``."""
    import av  # optional: only video needs it

    with av.open(str(path) if isinstance(path, (str, Path)) else path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for n in range(1, frames + 1):
            rgb, _ = make_frame(n, seed, height=height, width=width)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return path


def synthetic_root(cache_dir: str | Path, count: int = 612, seed: int = 0) -> Path:
    """Where :func:`ensure_synthetic` keeps the synthetic dataset of ``count`` frames (made or not)."""
    return Path(cache_dir) / f"synthetic-v{SYNTHETIC_VERSION}-seed{seed}-n{count}"


def ensure_synthetic(cache_dir: str | Path, count: int = 612, seed: int = 0) -> Path:
    """The cached synthetic dataset of ``count`` frames, generated on first use.

    It is built in a temp folder and renamed into place, so an interrupted generation never
    leaves a half-written dataset behind.
    """
    target = synthetic_root(cache_dir, count, seed)
    if (target / ".complete").is_file():
        return target
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"generating {count} synthetic frames in {target} (once)", flush=True)
    write_dataset(tmp, range(1, count + 1), seed)
    (tmp / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m unet_scratch.synthetic",
        description="Write a synthetic polyp dataset in the CVC-ClinicDB layout, or its frames as a video.",
    )
    parser.add_argument(
        "out",
        help="output folder (Original/ and 'Ground Truth/' are created), or a .mp4 file: an H.264 clip "
        "of the frames at 25 frames/s for predict.py (needs PyAV: pip install av, the [video] extra)",
    )
    parser.add_argument("--count", type=int, default=612, help="frames 1..COUNT")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument(
        "--uncompressed",
        action="store_true",
        help="write uncompressed TIFFs like the public download (default: zlib)",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    return exit_status(lambda: write(args))


def write(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() in VIDEO_EXTENSIONS and out.suffix.lower() != ".mp4":
        raise UserError(f"OUT {out}: clips are written as .mp4 (H.264): end the name in .mp4")
    if out.suffix.lower() != ".mp4":
        write_dataset(
            check_folder(args.out, "OUT"), range(1, args.count + 1), args.seed, compress=not args.uncompressed
        )
        print(f"wrote {args.count} frames to {out}")
        return 0
    if importlib.util.find_spec("av") is None:
        raise UserError("a video needs PyAV: pip install av (the [video] extra)")
    # written beside, then renamed, like every output: an interrupted clip never replaces a whole one
    atomic_write(out, lambda f: write_video(f, args.count, seed=args.seed), "OUT")
    print(f"wrote {args.count} frames ({args.count / 25:.1f} s at 25 frames/s) to {out}")
    return 0


if __name__ == "__main__":
    exit_with(main())
