"""predict.py: images of any size and format in, masks and overlays of the same size out; videos;
bad files named and skipped; runs refused as evaluate.py refuses them."""

from __future__ import annotations

import builtins
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unet_scratch import files
from unet_scratch import predict as predict_module
from unet_scratch.checkpoint import atomic_torch_save
from unet_scratch.config import TrainConfig
from unet_scratch.engine import amp_dtype, build_model, precision_name
from unet_scratch.inference import runs_near
from unet_scratch.predict import Segmenter, is_gray, main, output_names
from unet_scratch.report import PRED_COLOUR, outline_overlay
from unet_scratch.synthetic import make_frame, write_video

P = 1 / (1 + np.exp(-0.5))  # the constant probability of the run below


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose model gives every pixel the logit +0.5 (probability 0.62)."""
    run = tmp_path_factory.mktemp("runs") / "constant"
    run.mkdir()
    config = TrainConfig(input_size=64)
    model = build_model(config)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(0.5)
    atomic_torch_save({"model": model.state_dict(), "config": config.to_dict(), "epoch": 1}, run / "best.pt")
    return run


# (name, height, width) of the images the tests write, in several formats
SIZES = [
    ("a.tif", 288, 384),
    ("b.png", 576, 720),
    ("c.jpg", 1080, 1350),
    ("d.bmp", 301, 300),
    ("e.png", 50, 70),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for n, (name, h, w) in enumerate(SIZES, start=1):
        rgb, _ = make_frame(n, height=h, width=w)
        if name.endswith(".tif"):  # the published CVC-ClinicDB format: RGB tagged MinIsBlack
            tifffile.imwrite(
                folder / name, rgb, photometric="minisblack", planarconfig="contig", rowsperstrip=16
            )
        elif name == "e.png":
            Image.fromarray(rgb[..., 0]).save(folder / name)  # grayscale
        else:
            Image.fromarray(rgb).save(folder / name)
    (folder / "z_broken.png").write_bytes(b"\x89PNG but not really")
    (folder / "notes.txt").write_text("not an image: not picked up from a folder")
    return folder


def copies_of_e(images: Path, folder: Path, *names: str) -> Path:
    """``folder`` (made, parents too) holding a copy of the grayscale ``e.png`` under each of ``names``."""
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes((images / "e.png").read_bytes())
    return folder


def predict(*args: str) -> int:
    return main([*args, "--device", "cpu"])


def listing(folder: Path) -> list[str]:
    """The files in ``folder``, but the record of the prediction last started there."""
    return sorted(f.name for f in folder.iterdir() if f.name != ".predict.log")


def test_every_image_gets_a_mask_and_overlay_of_its_own_size(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert predict("--run", str(run), str(images), "--out", str(out), "--probabilities") == 2  # one bad file
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1 and "z_broken.png cannot be read as an image" in err_lines[0]
    assert "Traceback" not in captured.err
    for name, h, w in SIZES:
        stem = Path(name).stem
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == (h, w) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask == 255).all()  # p = 0.62 > 0.5 everywhere
        with Image.open(out / f"{stem}_overlay.png") as overlay:
            assert overlay.size == (w, h) and overlay.mode == "RGB"
        with Image.open(out / f"{stem}_prob.png") as prob:
            assert prob.mode == "I;16" and prob.size == (w, h)
            assert np.abs(np.asarray(prob).astype(np.int64) - round(P * 65535)).max() <= 1
        # not renamed; e.png alone is grayscale, which the line says
        gray = "; grayscale: the model was trained on colour frames" if name == "e.png" else ""
        assert f"{name}: {w}x{h}, polyp 100.0 % of the frame, max p 0.62{gray}\n" in captured.out
    assert not list(out.glob("z_broken*")) and not list(out.glob("notes*"))
    assert "5 images in" in captured.out and "1 input skipped" in captured.out


class RedChannel(torch.nn.Module):
    """A stand-in model: logit 20 * (red - 0.5), so the mask is where the prepared image is red."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20 * (x[:, :1] - 0.5)


@pytest.mark.parametrize("h, w", [(288, 384), (1080, 1350), (301, 300)])
def test_probabilities_are_resized_back_to_the_image(run: Path, h: int, w: int) -> None:
    segmenter = Segmenter(str(run), None, "cpu")
    segmenter.model = RedChannel()
    yy, xx = np.mgrid[0:h, 0:w]
    disk = (yy - 0.4 * h) ** 2 / (0.25 * h) ** 2 + (xx - 0.6 * w) ** 2 / (0.2 * w) ** 2 < 1  # off-centre
    image = np.zeros((h, w, 3), np.uint8)
    image[disk] = (255, 40, 40)
    (prob,) = segmenter.probabilities([image])
    assert prob.shape == (h, w)
    mask = prob.numpy() > 0.5
    iou = (mask & disk).sum() / (mask | disk).sum()
    assert iou > 0.97  # the disk comes back where it was, at the image's own size (64 px model input)


def test_strict_stops_at_the_first_bad_file(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = images / "z_broken.png"
    assert (
        predict("--run", str(run), str(bad), str(images / "a.tif"), "--out", str(tmp_path / "o"), "--strict")
        == 2
    )
    assert not (tmp_path / "o" / "a_mask.png").exists()
    out, err = capsys.readouterr()
    assert "(stopped: --strict)" in err and "skipped" not in err + out  # it stopped; nothing was skipped
    assert "stopped at the first unreadable input (--strict" in out
    missing = str(tmp_path / "missing.png")  # found out before any image is read: stopped as well
    assert (
        predict("--run", str(run), missing, str(images / "a.tif"), "--out", str(tmp_path / "o"), "--strict")
        == 2
    )
    assert capsys.readouterr().err == f"error: {missing} does not exist: check the path (stopped: --strict)\n"
    # the images before the bad one are written, whatever the batch they share with it
    for batch in ("1", "8"):
        out = tmp_path / f"batch{batch}"
        flags = ["--out", str(out), "--strict", "--batch-size", batch]
        assert predict("--run", str(run), str(images), *flags) == 2  # z_broken.png comes last
        assert sorted(f.name for f in out.glob("*_mask.png")) == [f"{n}_mask.png" for n in "abcde"]


def disk_full_on(monkeypatch: pytest.MonkeyPatch, marker: str, module: object = files) -> None:
    """Make ``module``'s writes (files.py's) of the files whose names hold ``marker`` fail as on
    a full disk."""
    real_open = builtins.open

    def full(path: Path, *args: object, **kwargs: object) -> IO:
        if marker in Path(path).name:
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(module, "open", full, raising=False)  # found before the builtin


def test_a_full_disk_leaves_an_images_earlier_outputs_all_as_they_were(
    run: Path,
    images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An image's mask, overlay and probability map are written as one: a disk that fills while
    the overlay is written leaves the earlier mask as well as the earlier overlay (the same
    files, not rewritten), not a new mask beside an old overlay, and no temp file."""
    out = tmp_path / "o"
    assert predict("--run", str(run), str(images / "e.png"), "--out", str(out)) == 0

    def inodes() -> dict[str, int]:  # a rename gives a file a new inode; the record is the new run's
        return {f.name: f.stat().st_ino for f in out.iterdir() if f.name != ".predict.log"}

    before = inodes()
    disk_full_on(monkeypatch, "_overlay.png.")  # the overlay's temp file
    again = ("--out", str(out), "--overwrite", "--probabilities")
    assert predict("--run", str(run), str(images / "e.png"), *again) == 2
    assert inodes() == before
    assert capsys.readouterr().err.endswith(
        f"error: cannot write {out / 'e_overlay.png'} (No space left on device): free disk space or "
        "write elsewhere (--out); the previous e_mask.png, e_overlay.png are kept\n"
    )


def test_temp_files_a_killed_prediction_left_are_removed(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prediction killed while writing (kill -9, a power cut) leaves hidden temp files, a video's
    as large as its frames: the next prediction into the folder removes them, and only those:
    not the temp file of a prediction still writing there (a process that runs, or a file written
    in the last minute: from another machine sharing the folder), not other hidden files."""
    out = tmp_path / "o"
    out.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()  # a process id that no process has now
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [out / f".clip_overlay.mp4.{gone.pid}.tmp", out / f".e_mask.png.{gone.pid}.tmp"]
        kept = [
            out / f".b_overlay.png.{alive.pid}.tmp",  # another prediction's, still being written
            out / f".notes.txt.{gone.pid}.tmp",  # not a prediction's
            out / ".e_mask.png.tmp",  # not of a write this project makes
            out / f".d_mask.png.{gone.pid}.tmp",  # written a moment ago: a process elsewhere?
        ]
        for f in stale + kept:
            f.write_bytes(b"half")
            if f != kept[-1]:
                os.utime(f, (time.time() - 61, time.time() - 61))  # untouched for a minute
        assert predict("--run", str(run), str(images / "e.png"), "--out", str(out)) == 0
        assert [f for f in stale + kept if f.exists()] == kept
        err = capsys.readouterr().err
        assert f"note: removed 2 temp files that a prediction killed while writing left in {out} (" in err
    finally:
        alive.kill()
        alive.wait()


def test_existing_predictions_are_not_overwritten(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    assert predict("--run", str(run), str(images / "e.png"), "--out", str(out)) == 0
    before = (out / "e_mask.png").stat().st_mtime_ns
    assert predict("--run", str(run), str(images / "e.png"), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {out} already holds predictions under these inputs' names (e_mask.png, e_overlay.png): "
        "--overwrite replaces them, --continue goes on with a stopped prediction; or another --out\n"
    )
    assert (out / "e_mask.png").stat().st_mtime_ns == before
    assert predict("--run", str(run), str(images / "e.png"), "--out", str(out), "--overwrite") == 0


def test_continue_goes_on_with_a_stopped_prediction_and_replaces_nothing_finished(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prediction stopped half-way (here: one input finished, one with its mask alone, as a
    kill between two renames leaves it, one not started): --continue writes the inputs whose
    files are not all there, under the names the whole set of inputs gives (a.png and a.jpg share
    a stem: a_png_*, a_jpg_*), and leaves the finished one's files as they were (same inodes)."""
    folder = copies_of_e(images, tmp_path / "in", "a.png", "b.png")
    (folder / "a.jpg").write_bytes((images / "c.jpg").read_bytes())
    out = tmp_path / "out"
    assert predict("--run", str(run), str(folder), "--out", str(out)) == 0
    assert sorted(f.name for f in out.glob(".*")) == [".predict.log"]
    finished = {f: (out / f).stat().st_ino for f in ("a_png_mask.png", "a_png_overlay.png")}
    (out / "a_jpg_overlay.png").unlink()
    for f in ("b_mask.png", "b_overlay.png"):
        (out / f).unlink()
    capsys.readouterr()
    assert predict("--run", str(run), str(folder), "--out", str(out), "--continue") == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"note: skipped 1 input whose files are all in {out} already (a.png; --continue)\n"
    )
    assert "a.jpg" in captured.out and "b.png" in captured.out and "a.png" not in captured.out
    assert sorted(f.name for f in out.iterdir()) == [
        ".predict.log", "a_jpg_mask.png", "a_jpg_overlay.png", "a_png_mask.png", "a_png_overlay.png",
        "b_mask.png", "b_overlay.png",
    ]  # fmt: skip
    assert {f: (out / f).stat().st_ino for f in finished} == finished
    mask = np.asarray(Image.open(out / "a_jpg_mask.png"))
    assert mask.shape == (1080, 1350) and mask.all()  # P = 0.62 everywhere: all polyp
    # everything there: nothing to do, said so; --continue and --overwrite exclude each other
    assert predict("--run", str(run), str(folder), "--out", str(out), "--continue") == 0
    assert capsys.readouterr().out == (
        f"nothing left to predict (--continue): {out} holds the files of every input, 3 inputs\n"
    )
    # other flags or another model than the prediction recorded: refused, naming them
    assert predict("--run", str(run), str(folder), "--out", str(out), "--continue", "--threshold", "0.9") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --continue: the prediction last started in {out} had other settings (")
    assert "(threshold: 0.5 there, 0.9 here)" in err and err.count("\n") == 1
    # the other precision (the first ran in --amp auto's): a map half fp32, half bf16 is refused
    auto = precision_name(amp_dtype(torch.device("cpu")))  # predict() runs on the CPU
    other, named = ("off", "fp32") if auto != "fp32" else ("bf16", "bf16 autocast")
    assert predict("--run", str(run), str(folder), "--out", str(out), "--continue", "--amp", other) == 2
    assert f"(precision: '{auto}' there, '{named}' here)" in capsys.readouterr().err
    # a record written before the precision was recorded: continued, not refused for a key it lacks
    record = (out / ".predict.log").read_text().splitlines()
    header = json.loads(record[0])
    del header["settings"]["precision"]
    (out / ".predict.log").write_text("\n".join([json.dumps(header), *record[1:]]) + "\n")
    assert predict("--run", str(run), str(folder), "--out", str(out), "--continue") == 0
    capsys.readouterr()
    other = tmp_path / "other.pt"
    shutil.copy(run / "best.pt", other)
    assert predict("--run", str(run), str(folder), "--out", str(out), "--continue") == 0  # the same model
    capsys.readouterr()
    assert predict("--run", str(other), str(folder), "--out", str(out), "--continue") == 2
    assert f"(model: ['{(run / 'best.pt').resolve()} (" in capsys.readouterr().err
    # another file under a finished input's name is not what was predicted: predicted again
    (folder / "b.png").write_bytes((images / "b.png").read_bytes())  # 576 x 720
    assert predict("--run", str(run), str(folder), "--out", str(out), "--continue") == 0
    assert "skipped 2 inputs whose files are all in" in capsys.readouterr().err
    assert np.asarray(Image.open(out / "b_mask.png")).shape == (576, 720)
    # no record: with these inputs' outputs there, refused; into a new folder, a new prediction
    (out / ".predict.log").unlink()
    assert predict("--run", str(run), str(folder), "--out", str(out), "--continue") == 2
    assert capsys.readouterr().err == (
        f"error: --continue: {out} holds predictions of these inputs but no record of the prediction "
        "that wrote them (.predict.log): --overwrite to predict them again, or another --out\n"
    )
    assert predict("--run", str(run), str(folder), "--out", str(tmp_path / "new"), "--continue") == 0
    assert len(listing(tmp_path / "new")) == 6 and (tmp_path / "new" / ".predict.log").is_file()


def test_a_full_disk_on_the_record_is_one_line(
    run: Path,
    images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    disk_full_on(monkeypatch, ".predict.log", predict_module)
    out = tmp_path / "o"
    assert predict("--run", str(run), str(images / "e.png"), "--out", str(out)) == 2
    assert capsys.readouterr().err.endswith(
        f"error: cannot write {out / '.predict.log'} (No space left on device): free disk space or "
        "write elsewhere (--out)\n"
    )
    assert listing(out) == ["e_mask.png", "e_overlay.png"]  # the image's files, whole


def test_continuing_an_overwrite_replaces_as_it_did(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stopped --overwrite (here: one that predicted a.png of a.png and b.png) goes on with
    --continue as it started: b.png's earlier probability map, which it does not write, goes."""
    folder = copies_of_e(images, tmp_path / "in", "a.png", "b.png")
    out = tmp_path / "out"
    assert predict("--run", str(run), str(folder), "--out", str(out), "--probabilities") == 0
    assert predict("--run", str(run), str(folder / "a.png"), "--out", str(out), "--overwrite") == 0
    capsys.readouterr()
    assert predict("--run", str(run), str(folder), "--out", str(out), "--continue") == 0
    assert "note: removed b_prob.png" in capsys.readouterr().err
    assert listing(out) == ["a_mask.png", "a_overlay.png", "b_mask.png", "b_overlay.png"]
    with pytest.raises(SystemExit) as stop:
        predict("--run", str(run), str(folder), "--out", str(out), "--continue", "--overwrite")
    assert stop.value.code == 2
    assert "--overwrite: not allowed with argument --continue" in capsys.readouterr().err


def test_predictions_are_not_written_into_a_datasets_frames_or_masks(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out data/Original`` would add NAME_mask.png files to the frames of a dataset (and
    ``Ground Truth`` to its masks); refused before the model is read. An empty --out is not
    the current folder."""
    data = tmp_path / "data"
    copies_of_e(images, data / "Original", "1.png")
    copies_of_e(images, data / "Ground Truth", "1.png")
    for folder in ("Original", "Ground Truth"):
        assert predict("--run", "not-read", str(images / "e.png"), "--out", str(data / folder) + "/") == 2
        assert capsys.readouterr().err == (
            f"error: --out {data / folder} would be written into {data / folder}, which holds the data: "
            "choose another --out\n"
        )
        assert sorted(f.name for f in (data / folder).iterdir()) == ["1.png"]
    assert predict("--run", "not-read", str(images / "e.png"), "--out", "") == 2
    assert capsys.readouterr().err == "error: --out is empty: give a folder\n"
    (tmp_path / "link").symlink_to(data / "Original")  # the same folder through a link
    assert predict("--run", "not-read", str(images / "e.png"), "--out", str(tmp_path / "link")) == 2
    assert "which holds the data: choose another --out" in capsys.readouterr().err
    assert sorted(f.name for f in (data / "Original").iterdir()) == ["1.png"]


def test_overwriting_leaves_no_output_of_the_earlier_prediction_beside_the_new_one(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A probability map from an earlier run with --probabilities, beside a mask of another model
    or threshold written now without it, would disagree with it: --overwrite replaces an
    input's predictions, all of them. Other inputs' predictions stay."""
    out = tmp_path / "o"
    inputs = [str(images / "e.png"), str(images / "d.bmp")]
    assert predict("--run", str(run), *inputs, "--out", str(out), "--probabilities") == 0
    capsys.readouterr()
    assert predict("--run", str(run), inputs[0], "--out", str(out), "--overwrite", "--threshold", "0.9") == 0
    assert listing(out) == [
        "d_mask.png", "d_overlay.png", "d_prob.png", "e_mask.png", "e_overlay.png"
    ]  # fmt: skip
    assert not np.asarray(Image.open(out / "e_mask.png")).any()  # P = 0.62 < 0.9: the new mask
    err = capsys.readouterr().err
    assert "note: removed e_prob.png: an earlier prediction's, which this one does not write" in err
    # an input that cannot be read this time keeps its earlier predictions whole, its map too
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "d.bmp").write_bytes(b"not a bitmap any more")
    assert predict("--run", str(run), str(tmp_path / "bad" / "d.bmp"), "--out", str(out), "--overwrite") == 2
    assert (out / "d_prob.png").is_file() and "removed" not in capsys.readouterr().err


def test_no_file_beside_the_inputs_is_ever_replaced(
    run: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """--out is the inputs' folder, which holds a ground truth ``e_mask.png`` beside ``e.png``:
    e.png's mask would replace it. Refused in one line, --overwrite or not, before the model is
    read (the run named does not exist), however the folder is spelled; every file stays as it
    was. A file no output would replace (``e_prob.png`` without --probabilities) is left alone."""
    folder = copies_of_e(images, tmp_path / "frames", "e.png")
    (folder / "e_mask.png").write_bytes(b"ground truth")
    before = contents(folder)
    monkeypatch.chdir(tmp_path)
    refused = "error: --out {} is the inputs' folder and holds e_mask.png, which e.png's prediction would"
    spellings = [([str(folder / "e.png")], "frames"), ([str(folder)], str(folder)),
                 (["frames"], f"../{tmp_path.name}/frames")]  # fmt: skip
    for inputs, out in spellings:
        assert predict("--run", "not-read", *inputs, "--out", out, "--overwrite") == 2
        err = capsys.readouterr().err
        assert err.startswith(refused.format(out)) and err.count("\n") == 1, err
        assert contents(folder) == before
    (folder / "e_mask.png").rename(folder / "e_prob.png")  # replaced only with --probabilities
    # without --overwrite: named as another's prediction, which --overwrite leaves (not "replaces")
    assert predict("--run", str(run), str(folder / "e.png"), "--out", str(folder)) == 2
    assert capsys.readouterr().err.startswith(f"error: {folder} already holds other predictions (e_prob.png)")
    assert predict("--run", str(run), str(folder / "e.png"), "--out", str(folder), "--overwrite") == 0
    assert listing(folder) == ["e.png", "e_mask.png", "e_overlay.png", "e_prob.png"]
    assert (folder / "e_prob.png").read_bytes() == b"ground truth"
    flags = ["--out", str(folder), "--overwrite", "--probabilities"]
    assert predict("--run", "not-read", str(folder / "e.png"), *flags) == 2
    assert "holds e_mask.png" in capsys.readouterr().err  # the earlier prediction: beside the inputs too
    (folder / "e_mask.png").unlink()
    assert predict("--run", "not-read", str(folder / "e.png"), *flags) == 2
    assert "holds e_overlay.png" in capsys.readouterr().err
    (folder / "e_overlay.png").unlink()
    assert predict("--run", "not-read", str(folder / "e.png"), *flags) == 2
    assert "holds e_prob.png" in capsys.readouterr().err
    assert (folder / "e_prob.png").read_bytes() == b"ground truth"


def test_a_photo_stored_sideways_is_segmented_upright(run: Path, tmp_path: Path) -> None:
    """EXIF orientation 6: stored 60 wide and 40 high, shown 40 wide and 60 high; the mask and
    the overlay are the size viewers show, and the overlay is the upright photo."""
    stored = make_frame(2, height=40, width=60)[0]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    assert predict("--run", str(run), str(tmp_path / "phone.png"), "--out", str(tmp_path / "o")) == 0
    assert Image.open(tmp_path / "o" / "phone_mask.png").size == (40, 60)
    overlay = np.asarray(Image.open(tmp_path / "o" / "phone_overlay.png")).astype(int)
    upright = np.rot90(stored, k=-1).astype(int)  # 90 degrees clockwise
    assert np.abs(overlay - upright).mean() < np.abs(overlay - np.rot90(stored, k=1).astype(int)).mean()


def test_a_webp_image_is_read_like_its_png(run: Path, tmp_path: Path) -> None:
    """WebP, the format browsers save, is an input: a lossless WebP gets the mask and the overlay
    its PNG gets (this run's mask is the same everywhere; the overlay carries the pixels read)."""
    rgb = make_frame(3, height=90, width=120)[0]
    folder = tmp_path / "web"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "a.png")
    Image.fromarray(rgb).save(folder / "b.webp", lossless=True)
    assert predict("--run", str(run), str(folder), "--out", str(tmp_path / "o")) == 0  # picked from a folder
    mask_png = np.asarray(Image.open(tmp_path / "o" / "a_mask.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "b_mask.png")), mask_png)
    overlay_png = np.asarray(Image.open(tmp_path / "o" / "a_overlay.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "b_overlay.png")), overlay_png)


def test_hidden_files_in_a_folder_are_not_inputs(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """macOS leaves ``._e.png`` (metadata, not an image) beside ``e.png`` on other disks: not an
    unreadable image that makes the exit status 2; named on its own, it is read (and refused)."""
    folder = copies_of_e(images, tmp_path / "frames", "e.png")
    (folder / "._e.png").write_bytes(b"\0\5\26\7 AppleDouble")
    assert predict("--run", str(run), str(folder), "--out", str(tmp_path / "o")) == 0
    assert capsys.readouterr().err == ""
    assert listing(tmp_path / "o") == ["e_mask.png", "e_overlay.png"]
    assert predict("--run", str(run), str(folder / "._e.png"), "--out", str(tmp_path / "o2")) == 2


def test_the_outputs_protected_are_videos_too_and_every_inputs_folder(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The checks before the model is read cover a video's outputs (``NAME_overlay.mp4``,
    ``NAME_frames.csv``) as well as an image's, and every folder the inputs come from, not the
    first one only."""
    pytest.importorskip("av")
    # an earlier video prediction alone in --out: it holds predictions
    out = tmp_path / "o"
    out.mkdir()
    (out / "clip_overlay.mp4").write_bytes(b"earlier")
    assert predict("--run", str(run), str(images / "e.png"), "--out", str(out)) == 2
    assert capsys.readouterr().err == (
        f"error: {out} already holds other predictions (clip_overlay.mp4): --overwrite writes these beside "
        "them, replacing none; or another --out\n"
    )
    # a misspelt --run or --onnx is named first: the user is not sent to --overwrite only to
    # learn next that the model's path is wrong
    assert predict("--run", f"{run}-typo", str(images / "e.png"), "--out", str(out)) == 2
    assert capsys.readouterr().err.startswith(f"error: run folder {run}-typo does not exist: ")
    assert predict("--onnx", f"{run}.onnx", str(images / "e.png"), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err == f"error: {run}.onnx does not exist: export one with python -m unet_scratch.export\n"
    (out / "a_mask.png").write_bytes(b"earlier")  # three: the first two by name
    (out / "b_mask.png").write_bytes(b"earlier")
    assert predict("--run", str(run), str(images / "e.png"), "--out", str(out)) == 2
    assert "already holds other predictions (a_mask.png, b_mask.png, ...):" in capsys.readouterr().err
    (out / "e_prob.png").write_bytes(b"earlier")  # e.png's: removed by --overwrite without --probabilities
    assert predict("--run", str(run), str(images / "e.png"), "--out", str(out)) == 2
    assert capsys.readouterr().err == (
        f"error: {out} already holds predictions under these inputs' names (e_prob.png): --overwrite "
        "replaces them, --continue goes on with a stopped prediction; or another --out\n"
    )
    (out / "e_prob.png").unlink()
    for f in ("a_mask.png", "b_mask.png"):
        (out / f).unlink()
    # a video whose folder holds its CSV (say, annotations): never replaced, --overwrite or not
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "clip.mp4")
    (clips / "clip_frames.csv").write_text("frame,annotation\n")
    assert predict("--run", "not-read", str(clips / "clip.mp4"), "--out", str(clips), "--overwrite") == 2
    assert "holds clip_frames.csv, which clip.mp4's prediction would replace" in capsys.readouterr().err
    # two input folders, --out the second, which holds a ground truth beside its frame
    a = copies_of_e(images, tmp_path / "a", "a.png")
    b = copies_of_e(images, tmp_path / "b", "b.png", "b_mask.png")
    assert predict("--run", "not-read", str(a), str(b), "--out", str(b), "--overwrite") == 2
    assert "holds b_mask.png, which b.png's prediction would replace" in capsys.readouterr().err
    assert (b / "b_mask.png").read_bytes() == (images / "e.png").read_bytes()


def test_grayscale_is_three_equal_channels() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    assert is_gray(image)
    image[..., 2] = 9  # red and green alike, blue not: a colour image
    assert not is_gray(image)
    image[..., 2], image[..., 0] = 0, 9  # green and blue alike, red not
    assert not is_gray(image)


def test_three_inputs_of_one_name_get_three_outputs() -> None:
    files = [Path("x/A/1.png"), Path("y/A/1.png"), Path("z/A/1.png"), Path("A/1.png")]
    assert output_names(files) == {
        Path("x/A/1.png"): "A_1_png", Path("y/A/1.png"): "A_1_png_2",
        Path("z/A/1.png"): "A_1_png_3", Path("A/1.png"): "A_1_png_4",
    }  # fmt: skip


def test_a_folder_is_read_without_the_predictions_in_it(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder holding a ground truth ``e_mask.png`` and an earlier ``e_overlay.png`` beside
    ``e.png``: only e.png is segmented (with a note naming what was left out), not the mask and
    overlay as frames of their own; named on its own, a file so named is segmented."""
    # the suffix in any case, as for images
    folder = copies_of_e(images, tmp_path / "frames", "e.png", "e_mask.png", "e_Overlay.PNG")
    out = tmp_path / "o"
    assert predict("--run", str(run), str(folder), f"{folder}/", "--out", str(out)) == 0  # listed twice
    captured = capsys.readouterr()
    assert captured.err == (
        "note: left out 2 files named like predictions (e_Overlay.PNG, e_mask.png); "
        "name a file on its own to segment it\n"
    )
    assert listing(out) == ["e_mask.png", "e_overlay.png"]
    assert "1 image in" in captured.out
    assert predict("--run", str(run), str(folder / "e_mask.png"), "--out", str(tmp_path / "o2")) == 0
    assert listing(tmp_path / "o2") == ["e_mask_mask.png", "e_mask_overlay.png"]
    # the note comes once the model is read: an error before it is the one line
    assert predict("--run", str(tmp_path / "no-run"), str(folder), "--out", str(tmp_path / "o3")) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # a folder of ground truth beside one of frames: its files are left out, not an error
    truth = tmp_path / "truth"
    truth.mkdir()
    (folder / "e_mask.png").rename(truth / "e_mask.png")
    assert predict("--run", str(run), str(truth), str(folder), "--out", str(tmp_path / "o4"), "--strict") == 0
    assert capsys.readouterr().err.startswith("note: left out 2 files named like predictions (e_mask.png, ")
    # nothing else: one line that says so
    (folder / "e.png").unlink()
    assert predict("--run", str(run), str(folder), str(truth), "--out", str(tmp_path / "o5")) == 2
    assert capsys.readouterr().err == (
        "error: nothing to segment: the files found are named like predictions (e_Overlay.PNG, e_mask.png): "
        "name one on its own to segment it\n"
    )


def test_sub_folders_are_not_read_and_a_note_says_so(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder is read one level deep: the frames in a sub-folder of it are not segmented, and a
    note names the sub-folder, not a silence; a folder holding only sub-folders is an error that
    names them, not "no image files" alone."""
    clip = copies_of_e(images, tmp_path / "clip", "a.png")
    copies_of_e(images, clip / "frames", "b.png")
    (clip / ".cache").mkdir()  # hidden: not worth a note
    out = tmp_path / "o"
    assert predict("--run", str(run), str(clip), "--out", str(out)) == 0
    assert capsys.readouterr().err == (
        f"note: left out 1 sub-folder of the folders given ({clip / 'frames'}/): folders are not read "
        "recursively; name one to segment it\n"
    )
    assert listing(out) == ["a_mask.png", "a_overlay.png"]
    # named too, or the output folder: not left out; the same folder twice: noted once
    assert predict("--run", str(run), str(clip), f"{clip}/frames", "--out", f"{clip}/pred") == 0
    assert capsys.readouterr().err == ""
    assert predict("--run", str(run), str(clip), f"{clip}/.", "--out", str(tmp_path / "twice")) == 0
    assert capsys.readouterr().err.startswith("note: left out 2 sub-folders of the folders given (")
    shutil.rmtree(clip / "pred")
    (clip / "a.png").unlink()
    assert predict("--run", str(run), str(clip), "--out", str(tmp_path / "o2")) == 2
    assert capsys.readouterr().err == (
        f"error: {clip}: no image or video files in this folder: sub-folders are not read, name one "
        f"({clip / 'frames'}/); nothing to segment\n"
    )


def test_an_image_named_twice_is_segmented_once(
    run: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The folder, the file in it and another spelling of it name one image: one prediction,
    under the image's own name (not ``frames_e_png_3``), one line for it."""
    folder = copies_of_e(images, tmp_path / "frames", "e.png")
    monkeypatch.chdir(tmp_path)
    assert predict("--run", str(run), "frames", str(folder / "e.png"), "./frames/e.png", "--out", "o") == 0
    assert listing(tmp_path / "o") == ["e_mask.png", "e_overlay.png"]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[1:-1]] == ["frames/e.png"], lines
    assert lines[-1].startswith("1 image in")


def test_no_empty_folder_is_left_when_nothing_was_written(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "a" / "o"
    assert predict("--run", str(run), str(images / "z_broken.png"), "--out", str(out)) == 2
    assert capsys.readouterr().out.endswith("\nno image written; 1 input skipped (named above)\n")
    assert not (tmp_path / "new").exists()  # each folder the command made
    out.mkdir(parents=True)  # a folder that was there stays
    assert predict("--run", str(run), str(images / "z_broken.png"), "--out", str(out)) == 2
    assert out.is_dir() and capsys.readouterr().out.endswith(f"skipped (named above) -> {out}/\n")


def test_a_missing_input_is_one_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.png"
    assert predict("--run", str(run), str(missing), "--out", str(tmp_path / "o")) == 2
    assert capsys.readouterr().err == f"error: {missing} does not exist: check the path; nothing to segment\n"
    assert not (tmp_path / "o").exists()


def test_home_is_expanded_in_paths_the_shell_left_alone(
    run: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--out=~/o`` and a quoted ``"~/e.png"`` reach the program with their ``~``: it means the
    home folder, not a folder named ``~`` made in the working directory."""
    from unet_scratch.train import parse_args

    home, cwd = copies_of_e(images, tmp_path / "home", "e.png"), tmp_path / "cwd"
    cwd.mkdir()
    (home / "r").symlink_to(run)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    assert predict("--run", "~/r", "~/e.png", "--out=~/o") == 0
    assert listing(home / "o") == ["e_mask.png", "e_overlay.png"]
    assert list(cwd.iterdir()) == []
    args = parse_args(["--out=~/runs", "--data", "~/data", "--init-from", "~"])
    assert (args.out, args.data, args.init_from) == (str(home / "runs"), str(home / "data"), str(home))


@pytest.mark.parametrize("problem", ["no best.pt", "pickle", "foreign"])
def test_bad_runs_are_refused_in_one_line(
    tmp_path: Path, images: Path, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    run.mkdir()
    if problem == "pickle":
        atomic_torch_save({"model": Payload(), "config": {}}, run / "best.pt")
    elif problem == "foreign":
        atomic_torch_save({"state_dict": {"w": torch.zeros(1)}}, run / "best.pt")
    assert predict("--run", str(run), str(images / "e.png"), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert {"no best.pt": "has no best.pt", "pickle": "could run code", "foreign": "not a unet-scratch"}[
        problem
    ] in err


def test_a_misspelt_checkpoint_a_runs_folder_or_a_dataset_folder_gets_the_fix(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o")
    assert predict("--run", str(run / "bestt.pt"), str(images / "e.png"), "--out", out) == 2  # a typo
    assert capsys.readouterr().err == f"error: {run / 'bestt.pt'} does not exist: {run} holds best.pt\n"
    assert predict("--run", str(run.parent), str(images / "e.png"), "--out", out) == 2  # train.py's --out
    assert f"holds runs: give one, e.g. {run}" in capsys.readouterr().err
    assert predict("--run", str(run.parent / "dice"), str(images / "e.png"), "--out", out) == 2  # a typo
    assert capsys.readouterr().err.endswith(f"does not exist: check the path; runs in {run.parent}: {run}\n")
    data = tmp_path / "data"
    copies_of_e(images, data / "Original", "1.png")
    assert predict("--run", str(run), str(data), "--out", out) == 2
    assert f"its frames are in {data / 'Original'}, give that" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "typed, expected",
    [
        (["--runn", "runs/dice"], "unrecognized arguments: --runn; did you mean --run?"),
        (["--onx=m.onnx"], "unrecognized arguments: --onx; did you mean --onnx?"),
        ([], "one of the arguments --run --onnx is required"),  # no typo: what is missing
        (["--", "--odd.png"], "one of the arguments --run --onnx is required"),  # after --: an input
        (["--thresh", "0.4"], "one of the arguments --run --onnx is required"),  # --threshold
    ],
)
def test_a_misspelt_required_flag_is_named_not_called_missing(
    typed: list[str], expected: str, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--runn RUN``: argparse would say that one of --run and --onnx is required, hiding the
    typo; the typo is named, with the flag it resembles. An abbreviation argparse accepts
    (``--thresh``) is no typo."""
    with pytest.raises(SystemExit) as stop:
        main([*typed, str(images / "e.png")])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"predict.py: error: {expected} (see --help)\n"


def test_the_runs_nearby_can_be_pasted_into_a_shell(tmp_path: Path) -> None:
    (tmp_path / "my run").mkdir()
    (tmp_path / "my run" / "best.pt").write_bytes(b"")
    assert runs_near(tmp_path / "dice") == f"check the path; runs in {tmp_path}: '{tmp_path / 'my run'}'"


def test_a_checkpoint_file_is_a_model_too(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint handed on alone (the config is inside it) segments as its run does; from a
    last.pt, the weight average is used, not the live weights."""
    config = TrainConfig(input_size=64)
    live, average = build_model(config), build_model(config)
    # masks all 0 from the live weights, all 255 from the average
    for model, bias in ((live, -0.5), (average, 0.5)):
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.fill_(bias)
    alone = tmp_path / "shared" / "combined-model.pt"  # beside no run folder, under another name
    alone.parent.mkdir()
    last = {"model": live.state_dict(), "ema": average.state_dict(), "config": config.to_dict(), "epoch": 1}
    atomic_torch_save(last, alone)
    assert predict("--run", str(run), str(images / "e.png"), "--out", str(tmp_path / "folder")) == 0
    assert predict("--run", str(run / "best.pt"), str(images / "e.png"), "--out", str(tmp_path / "file")) == 0
    assert predict("--run", str(alone), str(images / "e.png"), "--out", str(tmp_path / "last")) == 0
    out = capsys.readouterr().out
    assert f"model: {run / 'best.pt'} (dice loss" in out and f"model: {alone} (dice loss" in out
    # the device and precision as train.py names them: --amp auto is bf16 on a CPU that has it
    precision = precision_name(amp_dtype(torch.device("cpu"), "auto"))
    assert f"64x64, cpu {precision}); threshold" in out
    for amp, named in (("off", "fp32"), ("bf16", "bf16 autocast")):
        out_folder = str(tmp_path / amp)
        assert predict("--run", str(run), str(images / "e.png"), "--out", out_folder, "--amp", amp) == 0
        assert f"64x64, cpu {named}); threshold" in capsys.readouterr().out
    masks = {k: np.asarray(Image.open(tmp_path / k / "e_mask.png")) for k in ("folder", "file", "last")}
    assert (masks["folder"] == 255).all() and (masks["file"] == 255).all()  # P = 0.62 everywhere
    assert (masks["last"] == 255).all()  # the average's +0.5, not the live weights' -0.5
    # one checkpoint under two names would weigh double in an ensemble
    image, out = str(images / "e.png"), str(tmp_path / "o")
    assert predict("--run", str(run), "--run", str(run / "best.pt"), image, "--out", out) == 2
    assert f"{run / 'best.pt'} is given twice (also as {run})" in capsys.readouterr().err
    (tmp_path / "model.onnx").write_bytes(b"")
    # arguments in the wrong order, or a run's other files: not "damaged, retrain it"
    assert predict("--run", str(images), image, "--out", out) == 2
    assert capsys.readouterr().err == f"error: {images} holds images, not a model: --run takes a " \
        "run folder or a checkpoint, and the inputs to segment come after it\n"
    assert predict("--run", image, str(images / "d.bmp"), "--out", out) == 2
    assert capsys.readouterr().err == f"error: {image} is an image or a video, not a model: --run takes a " \
        "run folder or a checkpoint, and the inputs to segment come after it\n"
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{}")
    assert predict("--run", str(tmp_path / "r" / "config.json"), image, "--out", out) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'r' / 'config.json'} is a run's config, not its model: give the run " \
        f"folder {tmp_path / 'r'}\n"
    gone = tmp_path / "downloads" / "model.pt"  # a checkpoint, not a run folder, that is not there
    assert predict("--run", str(gone), image, "--out", out) == 2
    assert capsys.readouterr().err.startswith(f"error: checkpoint {gone} does not exist: ")
    onnx = tmp_path / "model.onnx"
    assert predict("--run", str(onnx), image, "--out", out) == 2
    err = capsys.readouterr().err
    assert err == f"error: {onnx} is an exported ONNX model: give it as --onnx {onnx} (predict.py)\n"
    assert not (tmp_path / "o").exists()


class Payload:
    def __reduce__(self):  # noqa: ANN204
        return (print, ("this would have run",))


def contents(folder: Path) -> dict[str, bytes]:
    """Each file of ``folder`` (hidden ones too: a temp file left behind shows) and its bytes."""
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.name != ".predict.log"}


def write_clip(path: Path, frames: int = 8, height: int = 96, width: int = 128) -> None:
    pytest.importorskip("av")
    write_video(path, frames, height, width, rate=10)


def test_video_gives_an_overlay_video_and_a_csv(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    av = pytest.importorskip("av")
    clip = tmp_path / "clip.mp4"
    write_clip(clip)
    assert predict("--run", str(run), str(clip), "--out", str(tmp_path / "o"), "--batch-size", "3") == 0
    with av.open(str(tmp_path / "o" / "clip_overlay.mp4")) as video:
        stream = video.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (128, 96)
        assert stream.average_rate == 10
        assert sum(1 for _ in video.decode(stream)) == 8
    with open(tmp_path / "o" / "clip_frames.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame"]) for r in rows] == list(range(8))
    assert [float(r["time_s"]) for r in rows] == pytest.approx([n / 10 for n in range(8)])
    assert all(
        float(r["polyp_area_pct"]) == 100.0 and float(r["max_prob"]) == pytest.approx(P, abs=1e-4)
        for r in rows
    )
    assert "8 video frames" in capsys.readouterr().out
    # a finished video is one --continue skips
    assert predict("--run", str(run), str(clip), "--out", str(tmp_path / "o"), "--continue") == 0
    assert "nothing left to predict" in capsys.readouterr().out


def test_probability_maps_are_for_images_and_a_video_says_so(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip)
    maps = ["--run", str(run), "--probabilities", "--out"]
    assert predict(*maps, str(tmp_path / "o"), str(clip), str(images / "e.png")) == 0
    err = capsys.readouterr().err
    assert "note: --probabilities writes maps for images; a video's CSV has each frame's largest" in err
    assert listing(tmp_path / "o") == [
        "clip_frames.csv", "clip_overlay.mp4", "e_mask.png", "e_overlay.png", "e_prob.png"
    ]  # fmt: skip
    assert predict(*maps, str(tmp_path / "p"), str(images / "e.png")) == 0
    assert "note" not in capsys.readouterr().err  # images alone: nothing to say


def test_frames_without_timestamps_are_timed_by_their_place_in_the_stream(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frame n of a 10 fps clip whose decoder gives no time is at n / 10 s, whatever batch it
    is segmented in (it was the number of frames written before its batch: 0, 0, 0, 0.3, ...)."""
    av = pytest.importorskip("av")
    clip = tmp_path / "clip.mp4"
    write_clip(clip)  # 8 frames at 10 fps
    real_open = av.open

    class Untimed:  # a decoded frame whose container gave it no timestamp
        time = None

        def __init__(self, frame: object) -> None:
            self.frame = frame

        def to_ndarray(self, **kwargs: object) -> np.ndarray:
            return self.frame.to_ndarray(**kwargs)

    class Reader:
        def __init__(self, container: object) -> None:
            self.container = container

        def __getattr__(self, name: str) -> object:
            return getattr(self.container, name)

        def decode(self, *args: object) -> Iterator[Untimed]:
            return (Untimed(f) for f in self.container.decode(*args))

    def opened(path: object, *args: object, **kwargs: object) -> object:
        container = real_open(path, *args, **kwargs)
        return Reader(container) if path == str(clip) else container  # the input, not the output

    monkeypatch.setattr(av, "open", opened)
    assert predict("--run", str(run), str(clip), "--out", str(tmp_path / "o"), "--batch-size", "3") == 0
    with open(tmp_path / "o" / "clip_frames.csv") as f:
        times = [float(r["time_s"]) for r in csv.DictReader(f)]
    assert times == pytest.approx([n / 10 for n in range(8)])


def test_an_interrupted_video_leaves_the_previous_overlay_whole(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C in the middle of a clip: no half-written overlay video and no temp file beside the
    previous one, which stays as it was (the overlay is encoded into a temp file renamed at the end)."""
    from unet_scratch import predict as predict_module

    pytest.importorskip("av")
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=40)  # long enough for the encoder to have written packets (its lookahead)
    out = tmp_path / "o"
    assert predict("--run", str(run), str(clip), "--out", str(out), "--batch-size", "10") == 0
    before = contents(out)
    real_overlay, calls = predict_module.outline_overlay, []

    def interrupted(*args: object) -> object:
        calls.append(1)
        if len(calls) == 35:  # 34 frames are encoded already
            raise KeyboardInterrupt
        return real_overlay(*args)

    monkeypatch.setattr(predict_module, "outline_overlay", interrupted)
    again = ["--out", str(out), "--overwrite", "--batch-size", "10"]
    assert predict("--run", str(run), str(clip), *again) == 130  # one line, status 130
    assert len(calls) == 35
    assert contents(out) == before
    # a shorter clip of the same name whose CSV cannot be written (a full disk): the new video
    # must not land beside the old CSV either; and the prediction stops there, as for an image (the
    # next video would fill the same disk), rather than skipping it for the next
    monkeypatch.setattr(predict_module, "outline_overlay", real_overlay)
    write_clip(clip, frames=4)
    following = shutil.copy(clip, tmp_path / "next.mp4")
    disk_full_on(monkeypatch, "_frames.csv.")  # the CSV's temp file
    assert predict("--run", str(run), str(clip), str(following), "--out", str(out), "--overwrite") == 2
    assert contents(out) == before
    captured = capsys.readouterr()
    assert captured.err.endswith(
        "(No space left on device): free disk space or write elsewhere (--out); "
        "the previous clip_overlay.mp4, clip_frames.csv are kept\n"
    )
    assert "next.mp4" not in captured.out + captured.err  # not tried


def test_a_synthetic_clip_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m unet_scratch.synthetic clip.mp4``: the video the README's example needs."""
    from unet_scratch import synthetic

    av = pytest.importorskip("av")
    clip = tmp_path / "v" / "clip.mp4"
    assert synthetic.main([str(clip), "--count", "5"]) == 0
    with av.open(str(clip)) as video:
        stream = video.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (384, 288)
        assert sum(1 for _ in video.decode(stream)) == 5
    assert [f.name for f in clip.parent.iterdir()] == ["clip.mp4"]  # no temp file left
    monkeypatch.setattr(synthetic.importlib.util, "find_spec", lambda name: None)  # PyAV missing
    assert synthetic.main([str(tmp_path / "w.mp4"), "--count", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs PyAV: pip install" in err and not (tmp_path / "w.mp4").exists()


def test_an_odd_sized_video_gets_an_overlay_every_player_plays(run: Path, tmp_path: Path) -> None:
    """H.264 4:2:0 needs even sizes, and players refuse 4:4:4: a 63x47 video's overlay is 4:2:0 at
    64x48, its last column and row repeated, every frame there."""
    av = pytest.importorskip("av")
    clip = tmp_path / "odd.mkv"
    with av.open(str(clip), "w") as sink:
        stream = sink.add_stream("ffv1", rate=25)  # lossless, any size
        stream.width, stream.height, stream.pix_fmt = 63, 47, "yuv444p"
        for n in range(4):
            frame = av.VideoFrame.from_ndarray(make_frame(n + 1, height=47, width=63)[0], format="rgb24")
            for packet in stream.encode(frame):
                sink.mux(packet)
        for packet in stream.encode():
            sink.mux(packet)
    assert predict("--run", str(run), str(clip), "--out", str(tmp_path / "o")) == 0
    with av.open(str(tmp_path / "o" / "odd_overlay.mp4")) as video:
        out = video.streams.video[0]
        assert (out.codec_context.pix_fmt, out.width, out.height) == ("yuv420p", 64, 48)
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in video.decode(out)]
    assert len(frames) == 4
    # the repeated edge: the padded column and row match their neighbours (up to lossy coding)
    last = frames[-1]
    assert np.abs(last[:, 63] - last[:, 62]).mean() < 8 and np.abs(last[47] - last[46]).mean() < 8


def test_a_truncated_video_is_said_to_be_and_an_audio_file_named(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An AVI cut short decodes fewer frames than its header declares: those are written, and a
    warning says so (Matroska declares none, so nothing can be said there); an MP4 that shows
    fewer frames than it stores is no such file. A file with only sound in it is one line, not
    "tuple index out of range"."""
    av = pytest.importorskip("av")
    clip = tmp_path / "clip.avi"
    with av.open(str(clip), "w") as sink:
        stream = sink.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        noise = np.random.default_rng(0)
        for _ in range(15):
            frame = av.VideoFrame.from_ndarray(noise.integers(0, 256, (48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                sink.mux(packet)
        for packet in stream.encode():
            sink.mux(packet)
    data = clip.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 7 // 10])
    assert predict("--run", str(run), str(tmp_path / "cut.avi"), "--out", str(tmp_path / "o")) == 0
    with open(tmp_path / "o" / "cut_frames.csv") as f:
        decoded = len(list(csv.DictReader(f)))
    assert 0 < decoded < 15
    assert capsys.readouterr().err == (
        f"warning: {tmp_path / 'cut.avi'}: {decoded} of the 15 frames its header declares could be decoded: "
        "the file may be truncated (the frames decoded are written)\n"
    )
    assert predict("--run", str(run), str(clip), "--out", str(tmp_path / "whole")) == 0
    assert capsys.readouterr().err == ""  # all 15: no warning
    # an MP4 whose edit list skips its first 2 of 12 frames (a clip cut without re-encoding): its
    # header counts 12, its duration and every player 10, and so does the decoder: no warning
    write_clip(tmp_path / "whole.mp4", frames=12)
    with av.open(str(tmp_path / "whole.mp4")) as source, av.open(str(tmp_path / "cut.mp4"), "w") as sink:
        stream = source.streams.video[0]
        copy = sink.add_stream_from_template(stream)
        skip = round(2 / (stream.time_base * stream.average_rate))  # two frames, in the stream's ticks
        for packet in source.demux(stream):
            if packet.dts is not None:  # not the demuxer's empty packet at the end
                packet.pts, packet.dts, packet.stream = packet.pts - skip, packet.dts - skip, copy
                sink.mux(packet)
    with av.open(str(tmp_path / "cut.mp4")) as check:
        assert check.streams.video[0].frames == 12
    assert predict("--run", str(run), str(tmp_path / "cut.mp4"), "--out", str(tmp_path / "m")) == 0
    with open(tmp_path / "m" / "cut_frames.csv") as f:
        assert len(list(csv.DictReader(f))) == 10
    assert capsys.readouterr().err == ""
    sound = tmp_path / "sound.mp4"
    with av.open(str(sound), "w") as sink:
        stream = sink.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            sink.mux(packet)
    assert predict("--run", str(run), str(sound), "--out", str(tmp_path / "s")) == 2
    err = capsys.readouterr().err
    assert err == f"error: {sound} holds no video stream (audio only?): nothing to segment (skipped)\n"


def test_video_without_pyav_names_the_install(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 10)
    real_import = builtins.__import__

    def no_av(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name == "av":
            raise ImportError("No module named 'av'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    assert predict("--run", str(run), str(clip), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install av" in err


def test_images_are_prepared_exactly_as_in_training(images: Path) -> None:
    from unet_scratch.data import load_pair, read_image
    from unet_scratch.inference import prepare

    tifffile.imwrite(images.parent / "mask.tif", np.zeros((288, 384), np.uint8))
    trained, _ = load_pair(images / "a.tif", images.parent / "mask.tif", 64)
    assert torch.equal(prepare(read_image(images / "a.tif"), 64), torch.from_numpy(trained))


def two_blobs(height: int = 40, width: int = 50) -> torch.Tensor:
    """A probability map: a large region at 0.6 (300 px), a small one at 0.9 (25 px), 0.1 elsewhere."""
    prob = torch.full((height, width), 0.1)
    prob[5:20, 5:25] = 0.6
    prob[30:35, 40:45] = 0.9
    return prob


@pytest.mark.parametrize(
    "flags, regions",
    [
        ([], ("large", "small")),
        (["--threshold", "0.7"], ("small",)),
        (["--threshold", "0.6"], ("small",)),  # strictly above, as the metrics score: 0.6 is background
        (["--postprocess", "largest"], ("large",)),
    ],
)
def test_threshold_and_postprocess_decide_the_written_mask(
    run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    regions: tuple[str, ...],
) -> None:
    monkeypatch.setattr(Segmenter, "probabilities", lambda self, images: [two_blobs() for _ in images])
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "f.png")
    assert predict("--run", str(run), str(tmp_path / "f.png"), "--out", str(tmp_path / "o"), *flags) == 0
    expected = np.zeros((40, 50), bool)
    if "large" in regions:
        expected[5:20, 5:25] = True
    if "small" in regions:
        expected[30:35, 40:45] = True
    mask = np.asarray(Image.open(tmp_path / "o" / "f_mask.png"))
    assert np.array_equal(mask == 255, expected) and set(np.unique(mask)) <= {0, 255}
    overlay = np.asarray(Image.open(tmp_path / "o" / "f_overlay.png"))  # on a black frame: colour = mask
    assert np.array_equal(overlay.any(axis=2), expected)
    assert f"polyp {100 * expected.mean():.1f} % of the frame" in capsys.readouterr().out
    # a video's frames the same way: its CSV and its overlay
    av = pytest.importorskip("av")
    clip = tmp_path / "black.mp4"
    with av.open(str(clip), "w") as sink:
        stream = sink.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 50, 40, "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((40, 50, 3), np.uint8), format="rgb24")
        for packet in [p for _ in range(3) for p in stream.encode(black)] + list(stream.encode()):
            sink.mux(packet)
    assert predict("--run", str(run), str(clip), "--out", str(tmp_path / "v"), *flags) == 0
    with open(tmp_path / "v" / "black_frames.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["polyp_area_pct"]) for r in rows] == [round(100 * expected.mean(), 3)] * 3
    assert [float(r["max_prob"]) for r in rows] == [0.9] * 3
    with av.open(str(tmp_path / "v" / "black_overlay.mp4")) as video:
        first = next(video.decode(video.streams.video[0])).to_ndarray(format="rgb24").astype(float)
    for region, box in (("large", (slice(7, 18), slice(7, 23))), ("small", (slice(31, 34), slice(41, 44)))):
        assert (first[box].mean() > 40) == (region in regions), region  # lossy video: the inside


def test_overlay_tints_the_mask_and_outlines_it() -> None:
    image = np.full((12, 10, 3), (100, 50, 200), np.uint8)
    mask = np.zeros((12, 10), bool)
    mask[3:9, 2:7] = True  # 6 x 5
    out = outline_overlay(image, mask, tint=0.35)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (out[~mask] == (100, 50, 200)).all()  # outside the mask: untouched
    border = mask.copy()
    border[4:8, 3:6] = False  # the 1-pixel boundary band (1/300 of 10 px rounds up to 1)
    assert (out[border] == PRED_COLOUR).all()
    tinted = np.round(0.65 * np.array([100, 50, 200]) + 0.35 * np.array(PRED_COLOUR))
    assert (out[4:8, 3:6] == tinted).all()  # inside: 65 % image, 35 % colour


def test_inputs_sharing_a_stem_get_their_extension() -> None:
    files = [Path("a/1.png"), Path("a/1.TIF"), Path("a/2.jpg")]
    assert output_names(files) == {files[0]: "1_png", files[1]: "1_tif", files[2]: "2"}


def test_probabilities_are_resized_bilinearly_between_pixel_centres() -> None:
    from unet_scratch.inference import to_size

    prob = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    # output pixel centres at input x = -0.25, 0.25, 0.75, 1.25 (clamped to the edge pixels)
    expected = torch.tensor([0.0, 0.25, 0.75, 1.0]).expand(3, 4)
    torch.testing.assert_close(to_size(prob, 3, 4)[0, 0], expected)
    assert to_size(prob, 2, 2) is prob  # already the image's size: untouched


def test_inputs_with_the_same_name_in_two_folders_keep_their_outputs(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder, (h, w) in (("A", (40, 56)), ("B", (72, 48))):
        (tmp_path / folder).mkdir()
        Image.fromarray(make_frame(1, height=h, width=w)[0]).save(tmp_path / folder / "1.png")
    out = tmp_path / "o"
    assert predict("--run", str(run), str(tmp_path / "A"), str(tmp_path / "B"), "--out", str(out)) == 0
    sizes = {f.name: Image.open(f).size for f in out.glob("*_mask.png")}
    assert sizes == {"A_1_png_mask.png": (56, 40), "B_1_png_mask.png": (48, 72)}
    lines = capsys.readouterr().out.splitlines()  # each image's line names its renamed outputs
    for folder in ("A", "B"):
        line = next(line for line in lines if line.startswith(str(tmp_path / folder / "1.png")))
        assert line.endswith(f"-> {folder}_1_png_*.png")
    files = [Path("A/1.png"), Path("x/A/1.png"), Path("1_png.jpg"), Path("A/1.tif")]
    names = output_names(files)
    assert len(set(names.values())) == len(files)  # never two inputs on one name


def test_several_runs_are_one_model_the_mean_of_their_probabilities(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    config = TrainConfig(input_size=64)
    model = build_model(config)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-2.0)  # p = 0.12
    atomic_torch_save(
        {"model": model.state_dict(), "config": config.to_dict(), "epoch": 1}, other / "best.pt"
    )
    out = tmp_path / "out"
    args = ["--run", str(run), "--run", str(other), str(images / "a.tif"), str(images / "b.png")]
    assert predict(*args, "--out", str(out), "--probabilities", "--tta", "--temperature", "2") == 0
    # each run's probabilities at its own temperature (1: dice), their mean, 0.3708, then T = 2 on
    # the mean: 0.2580 (T = 2 on each run before the mean would give 0.3745, the mean of the
    # logits 0.18); on the mean, T moves no mask at 0.5, as on an exported ensemble
    mean = (1 / (1 + np.exp(-0.5)) + 1 / (1 + np.exp(2.0))) / 2
    p = 1 / (1 + np.exp(-2 * np.log(mean / (1 - mean))))
    for stem, (h, w) in (("a", (288, 384)), ("b", (576, 720))):
        with Image.open(out / f"{stem}_prob.png") as prob:
            assert np.abs(np.asarray(prob).astype(np.int64) - round(p * 65535)).max() <= 1
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == (h, w) and not mask.any()  # 0.37 < 0.5: no polyp
    printed = capsys.readouterr().out
    assert f"model: ensemble of 2 ({run}/best.pt, {other}/best.pt; dice loss, 64x64" in printed
    assert "temperature 1 1 (each run's, before the mean), then 2 on the mean" in printed
