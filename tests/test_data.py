"""Data: frame ranges, the published TIFF format, conversions, cache, errors, Dataset."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, UnidentifiedImageError

from unet_scratch import data as data_mod
from unet_scratch.data import (
    PolypDataset,
    describe_frames,
    find_pairs,
    frame_fingerprint,
    load_frames,
    load_pair,
    parse_frames,
    read_image,
    read_mask,
)
from unet_scratch.errors import UserError
from unet_scratch.synthetic import make_frame, write_dataset

from .conftest import SHARED_DATA


def test_parse_frames() -> None:
    assert parse_frames("1-3") == [1, 2, 3]
    assert parse_frames("364-366,500,2-3") == [2, 3, 364, 365, 366, 500]
    assert parse_frames("none") == [] and parse_frames("") == []
    for bad in ("1-", "a-3", "5-2"):
        with pytest.raises(UserError, match="frame range"):
            parse_frames(bad)


def test_describe_frames_is_the_inverse_of_parse_frames() -> None:
    assert describe_frames([1, 2, 3, 7]) == "1-3,7"
    assert describe_frames([5]) == "5" and describe_frames([]) == ""
    assert describe_frames([1, 3, 4, 9, 10, 11, 20]) == "1,3-4,9-11,20"
    for spec in ("1-363", "364-428", "1-6,8,10-12", "2,4,6", "9-10,12"):
        assert describe_frames(parse_frames(spec)) == spec


def write_published_tif(path: Path, rgb: np.ndarray) -> None:
    """The public download's quirk: RGB stored MinIsBlack, 3 samples, 16-row strips."""
    tifffile.imwrite(path, rgb, photometric="minisblack", planarconfig="contig", rowsperstrip=16)


def test_published_and_compressed_tiff_read_the_same(tmp_path: Path) -> None:
    rgb, mask = make_frame(3)
    write_published_tif(tmp_path / "plain.tif", rgb)
    tifffile.imwrite(
        tmp_path / "zlib.tif",
        rgb,
        photometric="minisblack",
        planarconfig="contig",
        compression="zlib",
        predictor=True,
    )
    with pytest.raises(UnidentifiedImageError):  # the reason tifffile is needed at all
        Image.open(tmp_path / "plain.tif").load()
    assert np.array_equal(read_image(tmp_path / "plain.tif"), rgb)
    assert np.array_equal(read_image(tmp_path / "zlib.tif"), rgb)
    tifffile.imwrite(tmp_path / "m.tif", mask)
    tifffile.imwrite(tmp_path / "mz.tif", mask, compression="zlib")
    a = load_pair(tmp_path / "plain.tif", tmp_path / "m.tif", 64)
    b = load_pair(tmp_path / "zlib.tif", tmp_path / "mz.tif", 64)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (3, 64, 64) and a[0].dtype == np.uint8
    assert a[1].shape == (1, 64, 64) and set(np.unique(a[1])) <= {0, 1}


def test_resize_is_pillow_bicubic_and_mask_binarised_after(tmp_path: Path) -> None:
    rgb, mask = make_frame(5)
    mask[0, 0] = 200  # an interpolated edge value
    write_published_tif(tmp_path / "i.tif", rgb)
    tifffile.imwrite(tmp_path / "m.tif", mask)
    image, m = load_pair(tmp_path / "i.tif", tmp_path / "m.tif", 32)
    expected = np.asarray(Image.fromarray(rgb).resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(image, expected.transpose(2, 0, 1))
    resized = np.asarray(Image.fromarray(mask).resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(m[0], (resized > 127).astype(np.uint8))


def test_conversions_rgba_gray_16bit_png(tmp_path: Path) -> None:
    rgb, _ = make_frame(1, height=40, width=48)
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)
    gray = rgb[..., 0]
    tifffile.imwrite(tmp_path / "gray.tif", gray)
    assert np.array_equal(read_image(tmp_path / "gray.tif"), np.dstack([gray] * 3))
    tifffile.imwrite(tmp_path / "deep.tif", rgb.astype(np.uint16) * 257, photometric="rgb")
    assert np.array_equal(read_image(tmp_path / "deep.tif"), rgb)
    # between two levels: the nearest (127.5 -> 128; 254.0 -> 254, where v >> 8 gives 255)
    levels = np.array([[0, 128, 32767, 32768, 65280, 65535]], np.uint16)
    tifffile.imwrite(tmp_path / "levels.tif", levels)
    assert read_image(tmp_path / "levels.tif")[0, :, 0].tolist() == [0, 0, 127, 128, 254, 255]
    Image.fromarray(rgb).save(tmp_path / "x.bmp")
    assert np.array_equal(read_image(tmp_path / "x.bmp"), rgb)
    colour_mask = np.zeros((4, 4, 3), np.uint8)
    colour_mask[1:3, 1:3] = 255
    Image.fromarray(colour_mask).save(tmp_path / "mask.png")
    assert np.array_equal(read_mask(tmp_path / "mask.png"), colour_mask[..., 0])


def write_12bit_tiff(path: Path, values: np.ndarray) -> None:
    """A grayscale TIFF with 12 bits per sample, packed as the TIFF standard packs them (each row
    from its own byte, most significant bit first), written by hand: tifffile writes such files
    only with the imagecodecs package."""
    import struct

    height, width = values.shape
    bits = np.unpackbits(values.astype(">u2").view(np.uint8).reshape(height, width, 2), axis=2)
    rows = bits[:, :, 4:].reshape(height, width * 12)  # the low 12 of each sample's 16 bits
    strip = np.packbits(rows, axis=1).tobytes()  # each row padded to a whole byte
    tags = [  # (tag, type 3 = SHORT / 4 = LONG, value), in the order of their numbers
        (256, 3, width), (257, 3, height), (258, 3, 12), (259, 3, 1), (262, 3, 1),
        (273, 4, 8 + 2 + 12 * 9 + 4), (277, 3, 1), (278, 3, height), (279, 4, len(strip)),
    ]  # fmt: skip
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        one = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)  # left-aligned
        ifd += struct.pack("<HHI", tag, kind, 1) + one
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip)


def test_a_12_bit_tiff_is_scaled_by_its_own_largest_value(tmp_path: Path) -> None:
    """A 12-bit TIFF holds 0-4095: 4095 is white (255), not 4095 / 257 = 16, which would feed the
    model a nearly black frame. tifffile decodes the packed samples with imagecodecs ([tiff])."""
    pytest.importorskip("imagecodecs")
    levels = np.array([[0, 8, 9, 2047, 2048, 4086, 4095]], np.uint16)  # v * 255 / 4095, to the nearest
    write_12bit_tiff(tmp_path / "deep12.tif", np.repeat(levels, 3, axis=0))
    assert tifffile.imread(tmp_path / "deep12.tif").tolist() == np.repeat(levels, 3, axis=0).tolist()
    assert read_image(tmp_path / "deep12.tif")[0, :, 0].tolist() == [0, 0, 1, 127, 128, 254, 255]
    assert read_mask(tmp_path / "deep12.tif")[0].tolist() == [0, 0, 1, 127, 128, 254, 255]


def test_a_tiff_that_needs_imagecodecs_names_the_install(tmp_path: Path) -> None:
    """Without imagecodecs (blocked here in a process of its own), a TIFF whose samples tifffile
    cannot decode by itself is named with the install, not "replace the file"."""
    write_12bit_tiff(tmp_path / "deep12.tif", np.zeros((2, 3), np.uint16))
    code = (
        "import sys\n"
        "sys.modules['imagecodecs'] = None  # import imagecodecs raises ImportError\n"
        "from unet_scratch.data import read_image\n"
        "try:\n"
        "    read_image(sys.argv[1])\n"
        "except Exception as e:\n"
        "    print(e)\n"
    )
    command = [sys.executable, "-c", code, str(tmp_path / "deep12.tif")]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.stdout == (
        f"{tmp_path / 'deep12.tif'} needs the imagecodecs package to be decoded (packints_decode of 12-bit "
        "integers requires the 'imagecodecs' package): pip install imagecodecs (the [tiff] extra), or save "
        "it as an 8- or 16-bit uncompressed TIFF or a PNG\n"
    )


def test_find_pairs_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist.*--data synthetic"):
        find_pairs(tmp_path / "nope")
    (tmp_path / ".cache" / "synthetic" / "Original").mkdir(parents=True)  # hidden: not what was meant
    unpacked = write_dataset(tmp_path / "CVC-ClinicDB" / "PNG", range(1, 2))  # an archive's own folders
    with pytest.raises(UserError, match=f"Original is missing: .*: pass --data {unpacked}$"):
        find_pairs(tmp_path)
    (tmp_path / "CVC-ClinicDB").rename(tmp_path / "CVC ClinicDB")
    quoted = f"'{tmp_path}/CVC ClinicDB/PNG'"  # to paste as it is
    with pytest.raises(UserError, match=f"Original is missing: .*: pass --data {quoted}$"):
        find_pairs(tmp_path)
    (tmp_path / "CVC ClinicDB").rename(tmp_path / "CVC-ClinicDB")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(UserError, match="holds Original/ and 'Ground Truth/'$"):  # none near it: no hint
        find_pairs(tmp_path / "elsewhere")
    root = write_dataset(tmp_path / "d", range(1, 4))
    (root / "Ground Truth" / "3.tif").unlink()
    with pytest.raises(UserError, match=r"3\.tif has no mask"):
        find_pairs(root)
    (root / "Original" / "3.tif").unlink()
    tifffile.imwrite(root / "Ground Truth" / "9.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match=r"9\.tif has no image"):
        find_pairs(root)
    (root / "Ground Truth" / "9.tif").unlink()
    (root / "Original" / "notes.txt").write_text("x")
    (root / "Original" / "1_copy.tif").write_bytes(b"x")
    with pytest.warns(UserWarning, match="ignoring 2 file"):
        assert list(find_pairs(root)) == [1, 2]


def test_load_frames_shapes_and_missing_frames(synthetic_root: Path) -> None:
    images, masks = load_frames(synthetic_root, [1, 2, 5], 64)
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
    assert masks.shape == (3, 1, 64, 64) and set(masks.unique().tolist()) <= {0, 1}
    # each row is its own frame, image and mask from the same file pair, in the order asked for
    for row, n in enumerate([1, 2, 5]):
        image, mask = load_pair(
            synthetic_root / "Original" / f"{n}.tif", synthetic_root / "Ground Truth" / f"{n}.tif", 64
        )
        assert torch.equal(images[row], torch.from_numpy(image)) and torch.equal(
            masks[row], torch.from_numpy(mask)
        )
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(images[1], images[2])  # frames differ
    with pytest.raises(UserError, match="--val-frames: 2 frame.*first: 13"):
        load_frames(synthetic_root, [12, 13, 14], 64, flag="--val-frames")


def test_cache_is_used_then_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_dataset(tmp_path / "d", range(1, 5))
    calls = []
    real = data_mod.load_pair
    monkeypatch.setattr(data_mod, "load_pair", lambda *a: calls.append(a[0]) or real(*a))
    first = load_frames(root, [1, 2, 3, 4], 32, tmp_path / "cache")
    assert len(calls) == 4
    second = load_frames(root, [1, 2, 3, 4], 32, tmp_path / "cache")
    assert len(calls) == 4  # nothing decoded
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # a changed file changes the key
    path = root / "Original" / "2.tif"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_frames(root, [1, 2, 3, 4], 32, tmp_path / "cache")
    assert len(calls) == 8
    # a truncated cache file is detected and rebuilt
    for f in (tmp_path / "cache").glob("*.pt"):
        f.write_bytes(f.read_bytes()[:100])
    again = load_frames(root, [1, 2, 3, 4], 32, tmp_path / "cache")
    assert len(calls) == 12 and torch.equal(again[1], first[1])
    # another input size is another entry
    assert load_frames(root, [1, 2], 64, tmp_path / "cache")[0].shape[-1] == 64


def test_bad_files_give_user_errors(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", range(1, 3))
    good = (root / "Original" / "1.tif").read_bytes()
    (root / "Original" / "1.tif").write_bytes(good[: len(good) // 3])
    with pytest.raises(UserError, match=r"1\.tif cannot be read"):
        load_frames(root, [1], 32)
    (root / "Original" / "1.tif").write_bytes(b"not an image at all")
    with pytest.raises(UserError, match=r"1\.tif cannot be read"):
        load_frames(root, [1], 32)
    tifffile.imwrite(root / "Ground Truth" / "2.tif", np.zeros((10, 10), np.uint8))
    with pytest.raises(UserError, match=r"2\.tif is 10x10 but its image"):
        load_frames(root, [2], 32)
    (tmp_path / "frame.png").mkdir()  # a folder where an image goes (features.py IMAGE)
    with pytest.raises(UserError, match=r"frame\.png is a folder, not an image: give an image file$"):
        read_image(tmp_path / "frame.png")


def test_a_large_image_is_read_quietly_and_one_past_pillows_limit_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``Image.MAX_IMAGE_PIXELS`` Pillow warns (two lines on stderr, its own file and line),
    past twice that it refuses: the first is read, the second is one error naming the fix."""
    import warnings

    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.new("RGB", (12, 10), (9, 8, 7)).save(tmp_path / "large.png")  # 120 px: a warning
    Image.new("RGB", (30, 10)).save(tmp_path / "huge.png")  # 300 px: refused
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the read
        assert read_image(tmp_path / "large.png").shape == (10, 12, 3)
    with pytest.raises(UserError, match=r"huge\.png has more pixels than Pillow decodes .*: downscale it$"):
        read_image(tmp_path / "huge.png")


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_an_image_with_an_exif_orientation_is_read_upright_when_asked(
    tmp_path: Path, orientation: int
) -> None:
    """Orientation 6 (a phone held upright, stored sideways) is shown turned 90 degrees
    clockwise, 8 counter-clockwise, 3 upside down: read_image(upright=True), what predict.py
    reads, returns what viewers show; a dataset's frame is read as stored, so that a mask drawn
    on its stored pixels (the tag is on the frame's file only) still fits it."""
    stored = make_frame(2, height=40, width=60)[0]
    exif = Image.Exif()
    exif[0x0112] = orientation  # the EXIF Orientation tag
    Image.fromarray(stored).save(tmp_path / "f.png", exif=exif)
    turns = {1: 0, 3: 2, 6: -1, 8: 1}[orientation]  # np.rot90: k > 0 counter-clockwise
    np.testing.assert_array_equal(read_image(tmp_path / "f.png", upright=True), np.rot90(stored, k=turns))
    np.testing.assert_array_equal(read_image(tmp_path / "f.png"), stored)
    Image.fromarray(stored[..., 0] > 127).save(tmp_path / "m.png")  # its mask, untagged
    image, mask = load_pair(tmp_path / "f.png", tmp_path / "m.png", 32)
    assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32)  # the pair still fits


def test_polyp_dataset_reference_interface(synthetic_root: Path) -> None:
    images = [synthetic_root / "Original" / f"{n}.tif" for n in (1, 2)]
    labels = [synthetic_root / "Ground Truth" / f"{n}.tif" for n in (1, 2)]
    ds = PolypDataset(images, labels, (64, 64))
    assert len(ds) == 2
    image, mask, idx = ds[1]
    assert idx == 1 and image.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
    assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    tensors = load_frames(synthetic_root, [2], 64)
    assert torch.equal((image * 255).round().to(torch.uint8), tensors[0][0])  # one implementation
    assert torch.equal(mask.to(torch.uint8), tensors[1][0])


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="real CVC-ClinicDB frames not present")
def test_real_frames_read() -> None:
    image = read_image(SHARED_DATA / "Original" / "1.tif")
    assert image.shape == (288, 384, 3) and image.dtype == np.uint8
    images, masks = load_frames(SHARED_DATA, [1, 428], 128)
    assert images.shape == (2, 3, 128, 128) and 0 < masks.float().mean() < 0.5


def test_cache_holds_one_entry_per_input_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_dataset(tmp_path / "d", range(1, 3))
    calls = []
    real = data_mod.load_pair
    monkeypatch.setattr(data_mod, "load_pair", lambda *a: calls.append(a[0]) or real(*a))
    for size in (64, 32, 64, 32):
        load_frames(root, [1, 2], size, tmp_path / "cache")
    assert len(calls) == 4  # each size decoded once, then read from its own entry
    assert len(list((tmp_path / "cache").glob("frames-*.pt"))) == 2


def test_colour_and_rgba_masks_use_luma(tmp_path: Path) -> None:
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    assert (read_mask(tmp_path / "red.png") == (255 * 299 + 500) // 1000).all()  # 76: ITU-R 601 weights
    blue = np.zeros((2, 2, 4), np.uint8)
    blue[..., 2], blue[..., 3] = 255, 255
    Image.fromarray(blue).save(tmp_path / "blue.png")
    assert (read_mask(tmp_path / "blue.png") == (255 * 114 + 500) // 1000).all()  # 29, alpha ignored


def test_planar_and_float_tiffs(tmp_path: Path) -> None:
    rgb, _ = make_frame(2, height=20, width=24)
    tifffile.imwrite(
        tmp_path / "planar.tif", rgb.transpose(2, 0, 1), photometric="rgb", planarconfig="separate"
    )
    assert np.array_equal(read_image(tmp_path / "planar.tif"), rgb)
    tifffile.imwrite(tmp_path / "f255.tif", rgb.astype(np.float32), photometric="rgb")  # floats, 0-255 scale
    assert np.array_equal(read_image(tmp_path / "f255.tif"), rgb)
    tifffile.imwrite(
        tmp_path / "f1.tif", rgb.astype(np.float32) / 255, photometric="rgb"
    )  # floats, 0-1 scale
    assert np.abs(read_image(tmp_path / "f1.tif").astype(int) - rgb).max() <= 1


def test_a_synthetic_frame_is_a_function_of_its_number_and_seed() -> None:
    """Whatever else drew from numpy's global random state before: the cached dataset, the
    tests' frames and a clip are the same on every machine and in every order."""
    np.random.seed(1)
    image, mask = make_frame(5, seed=2, height=48, width=64)
    np.random.seed(2)
    again = make_frame(5, seed=2, height=48, width=64)
    assert np.array_equal(image, again[0]) and np.array_equal(mask, again[1])
    for other in (make_frame(6, seed=2, height=48, width=64), make_frame(5, seed=3, height=48, width=64)):
        assert not np.array_equal(image, other[0])
    # a function of the pair, not of their sum: frame 6 of seed 2 is not frame 5 of seed 3
    assert not np.array_equal(make_frame(6, seed=2, height=48, width=64)[0], other[0])


def test_synthetic_mask_stays_inside_the_endoscope_view() -> None:
    for n in range(1, 6):
        image, mask = make_frame(n)
        border = (image == 12).all(axis=2)  # the dark octagonal frame around the view
        assert border.any() and not mask[border].any()


def test_synthetic_dataset_is_generated_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unet_scratch import synthetic

    calls = []
    real = synthetic.write_dataset
    monkeypatch.setattr(synthetic, "write_dataset", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = synthetic.ensure_synthetic(tmp_path, count=3)
    again = synthetic.ensure_synthetic(tmp_path, count=3)
    assert (
        first == again
        and len(calls) == 1
        and sorted(p.name for p in (first / "Original").iterdir())
        == [
            "1.tif",
            "2.tif",
            "3.tif",
        ]
    )


@pytest.mark.parametrize("value, expected", [(127, 0), (128, 1), (0, 0), (255, 1)])
def test_mask_is_binarised_at_half_of_255(tmp_path: Path, value: int, expected: int) -> None:
    # a uniform mask stays uniform through the bicubic resize: only the threshold decides (> 127)
    rgb, _ = make_frame(1, height=40, width=48)
    write_published_tif(tmp_path / "i.tif", rgb)
    tifffile.imwrite(tmp_path / "m.tif", np.full((40, 48), value, np.uint8))
    _, mask = load_pair(tmp_path / "i.tif", tmp_path / "m.tif", 32)
    assert mask.dtype == np.uint8 and (mask == expected).all()


class _RunsCode:
    """Unpickled, it would make a folder: what a planted cache file must never get to do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.makedirs, (str(self.path),))


def test_the_cache_is_keyed_by_each_files_path_and_never_runs_a_file(tmp_path: Path) -> None:
    """A copy of the dataset (same names, sizes and times, `cp -a`) whose frame 2 was replaced
    by other pixels of the same size, its time put back, is not served the original's entry; a
    cache file holding a pickled object is not run but rebuilt, as is one of the wrong shape."""
    root = write_dataset(tmp_path / "d", range(1, 4), compress=False)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # copy2: the same sizes and modification times
    cache = tmp_path / "cache"
    first = load_frames(root, [1, 2, 3], 32, cache)
    image = copy / "Original" / "2.tif"
    st = image.stat()
    write_dataset(tmp_path / "other", [2], seed=9, compress=False)
    shutil.copyfile(tmp_path / "other" / "Original" / "2.tif", image)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image.stat().st_size == st.st_size  # nothing but the path tells the two apart
    served = load_frames(copy, [1, 2, 3], 32, cache)
    expected = load_pair(image, copy / "Ground Truth" / "2.tif", 32)[0]
    assert torch.equal(served[0][1], torch.from_numpy(expected))
    assert not torch.equal(served[0][1], first[0][1])

    entries = cache.glob("frames-*.pt")
    (entry,) = [f for f in entries if torch.equal(torch.load(f, weights_only=True)["images"], first[0])]
    ran = tmp_path / "ran"
    for planted in (
        {"images": _RunsCode(ran), "masks": first[1]},  # pickled code: torch.load(weights_only=True) refuses
        {"images": first[0][:2], "masks": first[1][:2]},  # two frames, where three are asked for
    ):
        torch.save(planted, entry)
        again = load_frames(root, [1, 2, 3], 32, cache)
        assert not ran.exists() and all(torch.equal(a, b) for a, b in zip(again, first))


def test_a_cache_that_cannot_be_written_leaves_no_file_and_names_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache is written atomically: a full disk in the middle leaves no half file (which a
    later run would have to detect) and is one line naming --cache-dir."""
    root = write_dataset(tmp_path / "d", range(1, 3))
    real_save = torch.save

    def half_then_full(obj: object, f: object, *args: object, **kwargs: object) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()[:1000]
        if isinstance(f, (str, os.PathLike)):
            Path(f).write_bytes(data)
        else:
            f.write(data)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full)
    full = r"No space left on device\): free disk space or write elsewhere \(--cache-dir\)"
    with pytest.raises(UserError, match=full):
        load_frames(root, [1, 2], 32, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_frames_named_twice_hidden_files_and_the_fingerprints_shape(tmp_path: Path) -> None:
    """1.tif beside 1.png is one frame twice: refused, naming both; a hidden file (.DS_Store)
    is passed over without a warning; and the fingerprint tells a 2x6 frame from the same
    bytes as 6x2."""
    root = write_dataset(tmp_path / "d", range(1, 3))
    (root / "Original" / ".DS_Store").write_bytes(b"\0\1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(find_pairs(root)) == [1, 2]
    Image.fromarray(make_frame(1, height=32, width=32)[0]).save(root / "Original" / "1.png")
    with pytest.raises(UserError, match=r"frame 1 appears twice \(1\.png, 1\.tif\)"):
        find_pairs(root)
    pixels = np.arange(36, dtype=np.uint8).reshape(2, 6, 3)
    prints = []
    for name, image in (("wide", pixels), ("tall", pixels.reshape(6, 2, 3))):
        (tmp_path / name / "Original").mkdir(parents=True)
        Image.fromarray(image).save(tmp_path / name / "Original" / "1.png")
        prints.append(frame_fingerprint(tmp_path / name, 1))
    assert prints[0] != prints[1]


def test_the_dataset_interface_wants_a_square_size() -> None:
    with pytest.raises(ValueError, match="input_size must be square, got \\(64, 32\\)"):
        PolypDataset([], [], (64, 32))


def test_the_synthetic_command_writes_frames_1_to_count_as_asked(tmp_path: Path) -> None:
    """``python -m unet_scratch.synthetic OUT --count 3 [--uncompressed]``: frames 1, 2 and 3,
    the pixels make_frame draws, zlib-compressed by default and uncompressed (like the public
    download) when asked."""
    from unet_scratch import synthetic

    zlib, none = tifffile.COMPRESSION.ADOBE_DEFLATE, tifffile.COMPRESSION.NONE
    for flags, compression in (([], zlib), (["--uncompressed"], none)):
        out = tmp_path / ("plain" if flags else "zlib")
        assert synthetic.main([str(out), "--count", "3", *flags]) == 0
        for sub in ("Original", "Ground Truth"):
            assert sorted(p.name for p in (out / sub).iterdir()) == ["1.tif", "2.tif", "3.tif"]
        for n in (1, 3):
            image, mask = make_frame(n)
            for sub, pixels in (("Original", image), ("Ground Truth", mask)):
                with tifffile.TiffFile(out / sub / f"{n}.tif") as tif:
                    assert tif.pages[0].compression == compression
                    assert np.array_equal(tif.asarray(), pixels)


def test_an_interrupted_synthetic_dataset_is_not_taken_for_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cached synthetic dataset is written beside its place and renamed once whole: Ctrl-C
    in the middle leaves nothing at its place, and the next use writes it all."""
    from unet_scratch import synthetic

    real = synthetic.write_dataset

    def one_frame_then_ctrl_c(out: Path, frames: range, *args: object, **kwargs: object) -> Path:
        real(out, [frames[0]], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_dataset", one_frame_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure_synthetic(tmp_path, count=3)
    assert not synthetic.synthetic_root(tmp_path, count=3).exists()
    monkeypatch.setattr(synthetic, "write_dataset", real)
    root = synthetic.ensure_synthetic(tmp_path, count=3)
    assert list(find_pairs(root)) == [1, 2, 3]
