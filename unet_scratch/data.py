"""CVC-ClinicDB on disk -> resized uint8 tensors in memory (and in an on-disk cache).

Layout::

    ROOT/Original/N.tif        RGB frame (tif, png, jpg, bmp or webp), N = integer frame number
    ROOT/Ground Truth/N.tif    its mask, same N

The published frames are RGB TIFFs tagged MinIsBlack with 3 samples per pixel, which Pillow
cannot open; TIFFs are therefore read with tifffile (uncompressed and compressed alike) and
everything else with Pillow. Every image becomes RGB uint8, every mask one channel uint8;
both are resized once with Pillow's bicubic filter (as the reference pipeline's
``ToPILImage -> Resize(BICUBIC) -> ToTensor``) and the mask is then binarised at 0.5.

:func:`load_frames` returns ``images (N, 3, S, S) uint8`` and ``masks (N, 1, S, S) uint8`` in
{0, 1}. 612 frames at 128x128 take ~30 MB, so the whole set lives on the training device.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image, ImageOps

from .checkpoint import atomic_torch_save
from .errors import UserError, listed

IMAGE_DIR = "Original"
MASK_DIR = "Ground Truth"
EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")  # what predict.py reads as video (PyAV)
MEDIA_EXTENSIONS = EXTENSIONS + VIDEO_EXTENSIONS  # images and videos: what predict.py reads
CACHE_VERSION = 2  # 2: 16-bit pixels rounded to the nearest 8-bit level (1 truncated them)
DATASET_URL = "https://polyp.grand-challenge.org/CVCClinicDB/"


# ----------------------------------------------------------------------------- frame ranges


def parse_frames(spec: str) -> list[int]:
    """``"1-363"`` or ``"364-428,500,510-512"`` -> sorted unique frame numbers.

    ``"none"`` or ``""`` gives an empty list. Ranges are inclusive.
    """
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return []
    frames: set[int] = set()
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise UserError(f"bad frame range {part.strip()!r} in {spec!r}: use e.g. 1-363,400")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UserError(f"bad frame range {part.strip()!r}: the end is before the start")
        frames.update(range(lo, hi + 1))
    return sorted(frames)


# ----------------------------------------------------------------------------- finding files


def _numbered_files(folder: Path) -> tuple[dict[int, Path], list[str]]:
    """Map frame number -> path for image files named ``N.ext``; also the skipped names."""
    found: dict[int, Path] = {}
    skipped: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in EXTENSIONS or not path.stem.isdigit():
            skipped.append(path.name)
            continue
        n = int(path.stem)
        if n in found:
            raise UserError(f"{folder}: frame {n} appears twice ({found[n].name}, {path.name})")
        found[n] = path
    return found, skipped


def _dataset_near(root: Path) -> Path | None:
    """The dataset folder a ``--data`` one level off means: the parent of its ``Original/`` or
    ``Ground Truth/``, or a folder up to two levels down that holds ``Original/`` (an archive
    unpacked into a folder of its own, ``CVC-ClinicDB/PNG/``); hidden folders (a runs folder's
    ``.cache``) and folders that cannot be read are passed over."""
    if root.name in (IMAGE_DIR, MASK_DIR) and (root.parent / IMAGE_DIR).is_dir():
        return root.parent

    def subfolders(folder: Path) -> list[Path]:
        try:
            return sorted(f for f in folder.iterdir() if f.is_dir() and not f.name.startswith("."))
        except OSError:  # a folder we may not look into
            return []

    def holds_frames(folder: Path) -> bool:
        try:
            return (folder / IMAGE_DIR).is_dir()
        except OSError:
            return False

    children = subfolders(root)
    grandchildren = [g for c in children for g in subfolders(c)]
    return next((f for f in [*children, *grandchildren] if holds_frames(f)), None)


def find_pairs(root: str | Path) -> dict[int, tuple[Path, Path]]:
    """Frame number -> ``(image_path, mask_path)`` for every frame in ``root``.

    Files whose name is not an integer with an image extension (e.g. ``Thumbs.db``,
    ``1_copy.tif``) are ignored with a warning. An image without a mask, or a mask without an
    image, is an error that names the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"data folder {root} does not exist: download CVC-ClinicDB from {DATASET_URL} and "
            f"unpack it there (with {IMAGE_DIR}/ and '{MASK_DIR}/'), pass --data DIR, "
            "or try --data synthetic"
        )
    folders = {}
    for sub in (IMAGE_DIR, MASK_DIR):
        if not (root / sub).is_dir():
            near = _dataset_near(root) if sub == IMAGE_DIR else None
            fix = f": pass --data {shlex.quote(str(near))}" if near else ""
            raise UserError(
                f"{root / sub} is missing: a CVC-ClinicDB folder holds {IMAGE_DIR}/ and '{MASK_DIR}/'{fix}"
            )
        files, skipped = _numbered_files(root / sub)
        if skipped:
            shown = listed(skipped)
            warnings.warn(
                f"{root / sub}: ignoring {len(skipped)} file(s) not named N.ext "
                f"(N an integer, ext one of {'/'.join(EXTENSIONS)}): {shown}",
                stacklevel=2,
            )
        folders[sub] = files
    images, masks = folders[IMAGE_DIR], folders[MASK_DIR]
    if not images:
        raise UserError(f"{root / IMAGE_DIR} holds no frames named N.tif/N.png: check --data")
    for n in sorted(images.keys() - masks.keys())[:1]:
        raise UserError(f"{images[n]} has no mask: add '{MASK_DIR}/{n}.<ext>' or remove the image")
    for n in sorted(masks.keys() - images.keys())[:1]:
        raise UserError(f"{masks[n]} has no image: add '{IMAGE_DIR}/{n}.<ext>' or remove the mask")
    return {n: (images[n], masks[n]) for n in sorted(images)}


def select_pairs(
    pairs: dict[int, tuple[Path, Path]], frames: list[int], flag: str, root: str | Path
) -> list[tuple[int, Path, Path]]:
    """The ``(n, image, mask)`` of ``frames``; an error names the flag when any is missing."""
    if not frames:
        raise UserError(f"{flag} selects no frames")
    missing = [n for n in frames if n not in pairs]
    if missing:
        have = f"{min(pairs)}-{max(pairs)}" if pairs else "none"
        raise UserError(
            f"{flag}: {len(missing)} frame(s) not in {root} (first: {missing[0]}; "
            f"the folder has frames {have}): fix {flag}"
        )
    return [(n, *pairs[n]) for n in frames]


# ----------------------------------------------------------------------------- reading


def _read_array(path: Path, upright: bool = False) -> tuple[np.ndarray, int]:
    """Decode a file to a numpy array and the bits per sample it was stored with (a 12-bit TIFF
    comes back as uint16 holding 0-4095); TIFF via tifffile, the rest via Pillow (``upright``:
    with its EXIF orientation applied, see :func:`read_image`)."""
    if path.is_dir():  # not "[Errno 21] Is a directory: replace the file"
        raise UserError(f"{path} is a folder, not an image: give an image file")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                return np.asarray(tif.asarray()), int(tif.pages[0].bitspersample)
        # Pillow warns past 89 Mpx (a whole-slide scan, a panorama): a large image is still an
        # image, read without its two-line warning; past twice that it refuses, below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if upright:
                    im = ImageOps.exif_transpose(im)
                if im.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "1"):
                    im = im.convert("RGBA" if "A" in im.mode else "RGB")
                a = np.asarray(im)
                return a, 8 * a.dtype.itemsize
    except Image.DecompressionBombError as e:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise UserError(f"{path} has more pixels than Pillow decodes ({limit:.0f} Mpx): downscale it") from e
    except Exception as e:  # any decoder failure (truncated, not an image, bad codec data)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "imagecodecs" in reason:  # a TIFF packed or compressed in a way tifffile needs it for
            raise UserError(
                f"{path} needs the imagecodecs package to be decoded ({reason}): pip install imagecodecs "
                "(the [tiff] extra), or save it as an 8- or 16-bit uncompressed TIFF or a PNG"
            ) from e
        raise UserError(f"{path} cannot be read as an image ({reason}): replace the file") from e


def _to_uint8(a: np.ndarray, path: Path, bits: int = 16) -> np.ndarray:
    """Scale 16-bit, float or bool arrays to uint8; a uint16 array stored with ``bits`` < 16 bits
    per sample (a 10- or 12-bit TIFF) by its own largest value, 2**bits - 1, not by 65535, which
    would leave a 12-bit frame nearly black."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:  # v * 255 / top rounded to the nearest level, half up (v / 257 at 16 bits)
        top = 2 ** min(max(bits, 9), 16) - 1
        return ((np.minimum(a, top).astype(np.uint32) * 255 + top // 2) // top).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
        return np.clip(a * scale, 0, 255).round().astype(np.uint8)
    raise UserError(f"{path}: unsupported pixel type {a.dtype}: save it as 8- or 16-bit")


def read_image(path: str | Path, upright: bool = False) -> np.ndarray:
    """Any supported image -> ``(H, W, 3)`` RGB uint8 (grayscale repeated, alpha dropped).

    ``upright``: turned by its EXIF orientation tag as every viewer shows it (a phone's JPEG is
    often stored sideways with one), for an image of one's own (predict.py), whose mask must
    match what its user sees. A dataset's frames are read as stored: the tag turns only the file
    that carries it, so a mask drawn on a tagged frame's stored pixels would no longer fit it.
    TIFFs (read by tifffile) are always read as stored."""
    path = Path(path)
    a, bits = _read_array(path, upright)
    a = _to_uint8(a, path, bits)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)  # planar (C, H, W) TIFF
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise UserError(f"{path}: expected an RGB or grayscale image, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


def read_mask(path: str | Path) -> np.ndarray:
    """Any supported mask -> ``(H, W)`` uint8 gray (colour masks via ITU-R 601 luma)."""
    path = Path(path)
    a, bits = _read_array(path)
    a = _to_uint8(a, path, bits)
    if a.ndim == 3:
        if a.shape[2] == 4:
            a = a[..., :3]
        if a.shape[2] == 3:  # the luma Pillow's convert("L") uses
            a = a.astype(np.uint32)
            a = (a[..., 0] * 299 + a[..., 1] * 587 + a[..., 2] * 114 + 500) // 1000
        else:
            a = a[..., 0]
        a = a.astype(np.uint8)
    if a.ndim != 2:
        raise UserError(f"{path}: expected a single-channel mask, got shape {a.shape}")
    return a


def resize_image(a: np.ndarray, size: int) -> np.ndarray:
    """``(H, W[, C])`` uint8 -> ``(size, size[, C])`` with Pillow's bicubic filter (the reference
    pipeline's ``Resize(BICUBIC)``); frames and masks alike."""
    return np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC))


def load_pair(image_path: str | Path, mask_path: str | Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame -> ``image (3, S, S) uint8`` and ``mask (1, S, S) uint8`` in {0, 1}.

    The mask is resized bicubically like the image, then binarised at 0.5 (> 127 of 255).
    """
    image, mask = read_image(image_path), read_mask(mask_path)
    if image.shape[:2] != mask.shape:
        raise UserError(
            f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
            f"{image.shape[1]}x{image.shape[0]}: masks must match their frames"
        )
    image = resize_image(image, size).transpose(2, 0, 1)
    mask = (resize_image(mask, size) > 127).astype(np.uint8)[None]
    return np.ascontiguousarray(image), mask


def frame_fingerprint(root: str | Path, n: int) -> str | None:
    """A short hash of frame ``n``'s decoded pixels (None when ``root`` has no such frame).

    It identifies the data a run was trained on: evaluate.py compares it with the same frame
    of the data it is asked to score on. Pixels, not file bytes, so a compressed and an
    uncompressed copy of the same frame agree.
    """
    folder = Path(root) / IMAGE_DIR
    path = _numbered_files(folder)[0].get(n) if folder.is_dir() else None
    if path is None:
        return None
    image = read_image(path)
    return hashlib.sha256(f"{image.shape}".encode() + image.tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------- cache


def _cache_key(items: list[tuple[int, Path, Path]], size: int) -> str:
    """Hash of every file's name, size and mtime, the input size and the cache version."""
    h = hashlib.sha256(f"v{CACHE_VERSION} size={size}".encode())
    for n, image, mask in items:
        for p in (image, mask):
            st = p.stat()
            h.update(f"{n}|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _read_cache(path: Path, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached tensors, or None when the file is missing, truncated or of another shape."""
    if not path.is_file():
        return None
    try:
        d = torch.load(path, weights_only=True)
        images, masks = d["images"], d["masks"]
        if images.shape != (count, 3, size, size) or masks.shape != (count, 1, size, size):
            return None
        return images, masks
    except Exception:  # a truncated or foreign file: rebuild it
        return None


def load_frames(
    root: str | Path,
    frames: list[int],
    size: int,
    cache_dir: str | Path | None = None,
    flag: str = "--frames",
    verbose: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read, resize and stack ``frames`` of ``root``: ``(N, 3, S, S)``, ``(N, 1, S, S)`` uint8.

    With ``cache_dir`` the result is stored there under a key of the file list, sizes, mtimes
    and ``size``; the next call with the same files decodes nothing. A changed file changes the
    key; a damaged cache file is detected and rebuilt.
    """
    items = select_pairs(find_pairs(root), frames, flag, root)
    cache_path = None
    if cache_dir:
        cache_path = Path(cache_dir) / f"frames-{_cache_key(items, size)}.pt"
        cached = _read_cache(cache_path, len(items), size)
        if cached is not None:
            if verbose:
                print(f"{flag}: {len(items)} frames from cache {cache_path}")
            return cached
    images = np.empty((len(items), 3, size, size), np.uint8)
    masks = np.empty((len(items), 1, size, size), np.uint8)
    for i, (_, image_path, mask_path) in enumerate(items):
        images[i], masks[i] = load_pair(image_path, mask_path, size)
    result = torch.from_numpy(images), torch.from_numpy(masks)
    if verbose:
        print(f"{flag}: decoded {len(items)} frames from {root}")
    if cache_path is not None:
        atomic_torch_save({"images": result[0], "masks": result[1]}, cache_path, "--cache-dir")
    return result


# ----------------------------------------------------------------------------- Dataset


class PolypDataset(torch.utils.data.Dataset):
    """The reference interface: ``dataset[i] -> (image (3, S, S), mask (1, S, S), i)``.

    Images are float32 in [0, 1] (as ``ToTensor`` gives), masks float32 in {0, 1}. Files are
    read on access with the same code as :func:`load_frames`, for users who bring their own
    DataLoader; the training loop itself uses :func:`load_frames`.
    """

    def __init__(
        self, image_paths: list[str | Path], label_paths: list[str | Path], input_size: int | tuple[int, int]
    ) -> None:
        if len(image_paths) != len(label_paths):
            raise ValueError(f"{len(image_paths)} images but {len(label_paths)} labels")
        if isinstance(input_size, tuple):
            if input_size[0] != input_size[1]:
                raise ValueError(f"input_size must be square, got {input_size}")
            input_size = input_size[0]
        self.image_paths = [Path(p) for p in image_paths]
        self.label_paths = [Path(p) for p in label_paths]
        self.input_size = int(input_size)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, mask = load_pair(self.image_paths[idx], self.label_paths[idx], self.input_size)
        return torch.from_numpy(image).float() / 255, torch.from_numpy(mask).float(), idx


def describe_frames(frames: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3,7"`` (for messages and config files)."""
    parts: list[str] = []
    for n in frames:
        if parts and n == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{n}"
        else:
            parts.append(str(n))
    return ",".join(parts)
