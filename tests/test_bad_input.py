"""Bad input: one line on stderr naming the file or flag, exit 2, no traceback, nothing left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unet_scratch.checkpoint import atomic_torch_save
from unet_scratch.errors import UserError, exit_status
from unet_scratch.evaluate import main as evaluate_main
from unet_scratch.train import main as train_main

from .test_evaluate import make_run

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--train-frames",
    "1-6",
    "--val-frames",
    "7-8",
    "--input-size",
    "32",
    "--batch-size",
    "2",
    "--epochs",
    "1",
    "--device",
    "cpu",
    "--keep",
    "best",
]


@pytest.fixture()
def root(tmp_path: Path, synthetic_root: Path) -> Path:
    """A private copy of the synthetic frames 1-12, free to damage."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "data"))


def damage_none(root: Path) -> None:
    pass


def empty_original(root: Path) -> None:
    for f in (root / "Original").iterdir():
        f.unlink()


def image_without_mask(root: Path) -> None:
    (root / "Ground Truth" / "4.tif").unlink()


def mask_without_image(root: Path) -> None:
    (root / "Original" / "4.tif").unlink()


def truncated_tiff(root: Path) -> None:
    p = root / "Original" / "3.tif"
    p.write_bytes(p.read_bytes()[:5000])


def not_an_image(root: Path) -> None:
    (root / "Original" / "3.tif").write_text("this is a text file, not a TIFF")


def mask_of_other_size(root: Path) -> None:
    tifffile.imwrite(root / "Ground Truth" / "5.tif", np.zeros((100, 120), np.uint8))


# (case, how to damage the data, extra flags, text the one line must contain)
FAILING: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    ("missing data folder", damage_none, ["--data", "{tmp}/nowhere"], "does not exist"),
    # --data one level off: the folder it meant is named (the frames are in {tmp}/data)
    ("--data its Original/", damage_none, ["--data", "{tmp}/data/Original"], "/': pass --data {tmp}/data\n"),
    ("--data its masks", damage_none, ["--data", "{tmp}/data/Ground Truth"], ": pass --data {tmp}/data\n"),
    (
        "--data the folder above",
        damage_none,
        ["--data", "{tmp}"],
        "{tmp}/Original is missing: a CVC-ClinicDB folder holds Original/ and 'Ground Truth/': "
        "pass --data {tmp}/data\n",
    ),
    ("empty Original/", empty_original, [], "holds no frames"),
    ("image without mask", image_without_mask, [], "4.tif has no mask"),
    ("mask without image", mask_without_image, [], "4.tif has no image"),
    ("range selects nothing", damage_none, ["--train-frames", "none"], "--train-frames selects no frames"),
    (
        "frames that do not exist",
        damage_none,
        ["--train-frames", "13-40"],
        "--train-frames: 28 frame(s) not in",
    ),
    ("bad range syntax", damage_none, ["--val-frames", "7-x"], "bad frame range"),
    ("train/val overlap", damage_none, ["--val-frames", "5-8"], "share 2 frame(s)"),
    ("train/test overlap", damage_none, ["--test-frames", "6-12"], "--train-frames includes 1 test frame"),
    ("val/test overlap", damage_none, ["--test-frames", "8-12"], "--val-frames includes 1 test frame"),
    ("truncated TIFF", truncated_tiff, [], "3.tif cannot be read"),
    ("not an image", not_an_image, [], "3.tif cannot be read"),
    ("mask of another size", mask_of_other_size, [], "5.tif is 120x100 but its image"),
    (
        "input size not /32",
        damage_none,
        ["--input-size", "100"],
        "--input-size must be a positive multiple of 32",
    ),
    ("batch size 0", damage_none, ["--batch-size", "0"], "--batch-size must be at least 1"),
    # TINY trains at 32x32, where the encoder ends at 1x1: BatchNorm needs two frames a batch
    (
        "a batch of one at 32x32",
        damage_none,
        ["--batch-size", "1"],
        "--input-size 32 with --batch-size 1 and 6 training frames: a batch would hold one frame",
    ),
    ("one training frame at 32x32", damage_none, ["--train-frames", "1"], "a batch would hold one frame"),
    ("epochs 0", damage_none, ["--epochs", "0"], "--epochs must be at least 1"),
    ("unknown loss", damage_none, ["--loss", "bce"], "invalid choice: 'bce'"),
    (
        "a flag spelt with _",
        damage_none,
        ["--input_size", "64"],
        "unrecognized arguments: --input_size 64; did you mean --input-size? (see --help)",
    ),
    ("a misspelt flag", damage_none, ["--ouput=x"], "--ouput=x; did you mean --out? (see --help)"),
    ("a longer flag", damage_none, ["--out-dir", "x"], "--out-dir x; did you mean --out? (see --help)"),
    ("an unknown flag", damage_none, ["--colour"], "unrecognized arguments: --colour (see --help)"),
    # predict.py's --threshold is not --threads: nothing close enough, no suggestion
    ("another command's flag", damage_none, ["--threshold", "0.5"], "--threshold 0.5 (see --help)"),
    ("resume of nothing", damage_none, ["--resume"], "--resume:"),
]
if not torch.cuda.is_available():
    FAILING.append(("cuda without CUDA", damage_none, ["--device", "cuda"], "no CUDA device"))


@pytest.mark.parametrize("case, damage, flags, expected", FAILING, ids=[c[0] for c in FAILING])
def test_bad_input_is_one_line_exit_2(
    case: str,
    damage: Callable[[Path], None],
    flags: list[str],
    expected: str,
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    damage(root)
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    runs = tmp_path / "runs"
    try:
        code = train_main(["--data", str(root), "--out", str(runs), *TINY, *flags])
    except SystemExit as e:  # argparse errors exit directly
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and expected.replace("{tmp}", str(tmp_path)) in err, err
    assert "Traceback" not in err
    run_dirs = [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.exists() else []
    assert run_dirs == []  # nothing that could pass for a result


def test_one_line_in_a_real_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "train.py", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "runs")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--data synthetic" in proc.stderr


def test_odd_but_valid_input_is_accepted(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RGBA, grayscale and 16-bit frames are converted; an all-zero mask is accepted;
    files not named N.ext are ignored with a warning."""
    rgb = tifffile.imread(root / "Original" / "1.tif")
    (root / "Original" / "1.tif").unlink()
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(root / "Original" / "1.png")
    tifffile.imwrite(root / "Original" / "2.tif", rgb[..., 1])
    tifffile.imwrite(root / "Original" / "3.tif", rgb.astype(np.uint16) * 257, photometric="rgb")
    tifffile.imwrite(root / "Ground Truth" / "8.tif", np.zeros(rgb.shape[:2], np.uint8))
    (root / "Original" / "Thumbs.db").write_bytes(b"\0")
    code = train_main(["--data", str(root), "--out", str(tmp_path / "runs"), *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "ignoring 1 file(s)" in captured.err and "Thumbs.db" in captured.err
    assert (tmp_path / "runs" / "dice" / "best.pt").is_file()


def test_all_zero_mask_follows_the_empty_mask_rule(root: Path, tmp_path: Path) -> None:
    tifffile.imwrite(root / "Ground Truth" / "7.tif", np.zeros((288, 384), np.uint8))
    assert train_main(["--data", str(root), "--out", str(tmp_path / "runs"), *TINY]) == 0
    json_path = tmp_path / "r.json"

    def scores_of_frame_7(runs: Path) -> dict:
        args = ["--runs", str(runs), "--data", str(root), "--test-frames", "7", "--device", "cpu"]
        assert evaluate_main([*args, "--json", str(json_path)]) == 0
        return {r["name"]: r["per_image"]["7"] for r in json.loads(json_path.read_text())["runs"]}

    (score,) = (s["dice"] for s in scores_of_frame_7(tmp_path / "runs").values())
    assert score in (0.0, 1.0)  # 1.0 if nothing was predicted, 0.0 otherwise: never NaN
    # which of the two, exactly: runs that predict nothing and everything (constant outputs)
    make_run(tmp_path / "constant", "nothing", "dice", 32, -0.5, root)
    make_run(tmp_path / "constant", "everything", "dice", 32, +0.5, root)
    scores = scores_of_frame_7(tmp_path / "constant")
    assert scores == {  # pixel counts at the runs' 32 x 32: no polyp pixel, so no tp and no fn
        "nothing": {"dice": 1.0, "jaccard": 1.0, "tp": 0, "fp": 0, "fn": 0},
        "everything": {"dice": 0.0, "jaccard": 0.0, "tp": 0, "fp": 32 * 32, "fn": 0},
    }


# ----------------------------------------------------------------------------- untrusted checkpoints


class Payload:
    """Stands for arbitrary pickled code."""

    def __reduce__(self):  # noqa: ANN204
        return (print, ("this would have run",))


def evaluate_one(tmp_path: Path, ckpt: object, root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    if isinstance(ckpt, bytes):
        (run / "best.pt").write_bytes(ckpt)
    else:
        atomic_torch_save(ckpt, run / "best.pt")
    code = evaluate_main(["--runs", str(tmp_path / "runs"), "--data", str(root), "--test-frames", "9-10"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_pickle_payload_is_refused(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = evaluate_one(tmp_path, {"model": Payload(), "config": {}}, root, capsys)
    assert "could run code" in err and "this would have run" not in err


def test_other_architecture_is_refused_by_name(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from unet_scratch import UNetResNet50

    state = UNetResNet50(num_classes=2).state_dict()
    del state["encoder.layer4.2.bn3.running_var"]
    err = evaluate_one(tmp_path, {"model": state, "config": {"input_size": 32}, "epoch": 1}, root, capsys)
    assert "head.weight (2, 16, 3, 3) vs (1, 16, 3, 3)" in err
    assert "encoder.layer4.2.bn3.running_var" in err


def test_a_bare_state_dict_is_refused(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unet_scratch import UNetResNet50

    err = evaluate_one(tmp_path, UNetResNet50().state_dict(), root, capsys)  # no config: cannot be rebuilt
    assert "not a unet-scratch checkpoint" in err


def test_a_checkpoint_without_weights_is_refused(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from unet_scratch.config import TrainConfig

    err = evaluate_one(tmp_path, {"config": TrainConfig().to_dict(), "epoch": 3}, root, capsys)
    assert "not a unet-scratch checkpoint (no model/config)" in err


def test_truncated_checkpoint_is_refused(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = evaluate_one(tmp_path, b"PK\x03\x04 not really a checkpoint", root, capsys)
    assert "damaged or not a checkpoint" in err


def test_a_checkpoint_that_cannot_be_opened_is_not_called_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No permission or a disk error: the file may be whole, so not 'retrain or restore it'."""
    from unet_scratch import checkpoint
    from unet_scratch.errors import UserError

    (tmp_path / "best.pt").write_bytes(b"whatever")

    def refused(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint.torch, "load", refused)
    with pytest.raises(UserError) as e:
        checkpoint.load_checkpoint(tmp_path / "best.pt")
    want = f"cannot read {tmp_path / 'best.pt'} (Permission denied): check its permissions or the disk"
    assert str(e.value) == want


def test_a_text_file_named_best_pt_is_not_data_torch_save_wrote(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = evaluate_one(tmp_path, b"hello", root, capsys)  # the unpickler's KeyError(101) said "(101)"
    assert "best.pt is damaged or not a checkpoint (not data that torch.save wrote): retrain" in err


# --------------------------------------------------------------- output paths that cannot be written

# (name, command, its arguments, the output flag's value, what the error says); {file} is a file,
# {dir} an empty folder, {run} a run folder, {image} an image, {data} the synthetic frames
EVALUATE = ["{run}", "--test-frames", "9-12"]  # then the flag whose path is the case's target
EXPORT = ["--run", "{run}", "--format", "exported", "--out"]
UNWRITABLE = [
    (
        "train",
        "train",
        ["--data", "{data}", *TINY, "--out"],
        "{file}/runs",
        "{file} is a file, not a folder: choose another --out",
    ),
    (
        "predict into a file's folder",
        "predict",
        ["--run", "{run}", "{image}", "--out"],
        "{file}/sub",
        "{file} is a file, not a folder: choose another --out",
    ),
    (
        "predict into a file",
        "predict",
        ["--run", "{run}", "{image}", "--out"],
        "{file}",
        "{file} is a file, not a folder",
    ),
    (
        "evaluate --json",
        "evaluate",
        [*EVALUATE, "--json"],
        "{file}/r.json",
        "--json {file}/r.json: {file} is a file",
    ),
    (
        "evaluate --json empty",  # Path("") is ".": not the current folder's "" file
        "evaluate",
        [*EVALUATE, "--json"],
        "",
        "error: --json is empty: give a file name",
    ),
    (
        "evaluate --overlays empty",
        "evaluate",
        [*EVALUATE, "--overlays"],
        "",
        "error: --overlays is empty: give a folder",
    ),
    (
        "evaluate --json a folder",
        "evaluate",
        [*EVALUATE, "--json"],
        "{dir}",
        "--json {dir} is a folder: give a file name",
    ),
    (
        "evaluate --curves",
        "evaluate",
        [*EVALUATE, "--curves"],
        "{file}/c.png",
        "choose another --curves",
    ),
    (
        "evaluate --overlays",
        "evaluate",
        [*EVALUATE, "--overlays"],
        "{file}/ov",
        "choose another --overlays",
    ),
    (
        "export",
        "export",
        EXPORT,
        "{file}/m.pt2",
        "choose another --out",
    ),
    (
        "export to a folder",
        "export",
        EXPORT,
        "{dir}",
        "--out {dir} is a folder",
    ),
    ("features", "features", ["--run", "{run}", "{image}", "--out"], "{file}/f", "choose another --out"),
    ("summary --diagram", "summary", ["--diagram"], "{file}/a.png", "choose another --diagram"),
    ("summary --diagram .txt", "summary", ["--diagram"], "{dir}/a.txt", "matplotlib cannot write .txt"),
    ("summary --blocks", "summary", ["--blocks"], "{file}/b.png", "choose another --blocks"),
    (
        "evaluate --curves .txt",
        "evaluate",
        [*EVALUATE, "--curves"],
        "{dir}/c.txt",
        "matplotlib cannot write .txt files: end the name in .png",
    ),
    (
        "train --cache-dir",
        "train",
        ["--data", "{data}", *TINY, "--out", "{dir}/runs", "--cache-dir"],
        "{file}/cache",
        "choose another --cache-dir",
    ),
    (
        "evaluate --cache-dir",
        "evaluate",
        [*EVALUATE, "--cache-dir"],
        "{file}/cache",
        "choose another --cache-dir",
    ),
    (
        "evaluate --json onto the checkpoint",
        "evaluate",
        [*EVALUATE, "--json"],
        "{run}/best.pt",
        "--json {run}/best.pt would replace {run}/best.pt, which this command reads",
    ),
    (
        "evaluate --json onto the config through a link",
        "evaluate",
        [*EVALUATE, "--json"],
        "{link}",
        "would replace {run}/config.json, which this command reads",
    ),
    (
        "evaluate --json onto the checkpoint through a hard link",  # one inode, two names
        "evaluate",
        [*EVALUATE, "--json"],
        "{hard}",
        "would replace {run}/best.pt, which this command reads",
    ),
    (
        "evaluate --runs, --json onto a checkpoint",
        "evaluate",
        ["--runs", "{runs}", "--test-frames", "9-12", "--json"],
        "{run}/best.pt",
        "--json {run}/best.pt would replace {run}/best.pt, which this command reads",
    ),
    (
        "evaluate --curves onto a frame",
        "evaluate",
        [*EVALUATE, "--curves"],
        "{data}/Original/9.tif",
        "--curves {data}/Original/9.tif would be written into {data}/Original, which holds the data: "
        "choose another --curves",
    ),
    (
        "evaluate --curves as a new frame",  # 99.tif without a mask: the data could not be read again
        "evaluate",
        [*EVALUATE, "--curves"],
        "{data}/Original/99.tif",
        "would be written into {data}/Original, which holds the data",
    ),
    (
        "evaluate --json onto a mask",
        "evaluate",
        [*EVALUATE, "--json"],
        "{data}/Ground Truth/../Ground Truth/3.tif",
        "would be written into {data}/Ground Truth, which holds the data",
    ),
    (
        "evaluate --cache-dir into the masks",
        "evaluate",
        [*EVALUATE, "--cache-dir"],
        "{data}/Ground Truth",
        "--cache-dir {data}/Ground Truth would be written into {data}/Ground Truth, which holds the data",
    ),
    (
        "evaluate --overlays into the frames",
        "evaluate",
        [*EVALUATE, "--overlays"],
        "{data}/Original/",
        "--overlays {data}/Original would be written into {data}/Original, which holds the data",
    ),
    (
        "export onto the checkpoint",
        "export",
        EXPORT,
        "{run}/../r/best.pt",
        "would replace {run}/best.pt, which this command reads",
    ),
    ("synthetic .avi clip", "synthetic", ["--count", "2"], "{dir}/c.avi", "end the name in .mp4"),
    ("synthetic frames", "synthetic", ["--count", "2"], "{file}/ds", "choose another OUT"),
    ("synthetic clip", "synthetic", ["--count", "2"], "{file}/c.mp4", "choose another OUT"),
    ("synthetic empty", "synthetic", ["--count", "2"], "", "error: OUT is empty: give a folder"),
]

# the first step of each command's work: reading frames, a checkpoint, drawing, generating
WORK = {
    "train": ["train.load_frames", "train.ensure_synthetic"],
    "predict": ["inference.load_checkpoint"],
    "evaluate": ["inference.load_checkpoint", "evaluate.load_frames"],
    "export": ["inference.load_checkpoint"],
    "features": ["inference.load_checkpoint"],
    "summary": ["summary.stage_table"],
    "synthetic": ["synthetic.write_dataset", "synthetic.write_video"],
}


def forbid_work(monkeypatch: pytest.MonkeyPatch, steps: list[str], case: str) -> None:
    """Make each of ``steps`` ("module.function" of unet_scratch) fail the test if reached."""
    import importlib

    def work(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{case}: the work started before the output path was checked")

    for name in steps:
        module, attr = name.rsplit(".", 1)
        monkeypatch.setattr(importlib.import_module(f"unet_scratch.{module}"), attr, work)


@pytest.mark.parametrize("case, command, args, target, expected", UNWRITABLE, ids=[c[0] for c in UNWRITABLE])
def test_an_output_path_that_cannot_be_written_stops_the_command_at_its_start(
    case: str,
    command: str,
    args: list[str],
    target: str,
    expected: str,
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One line naming the path and the flag, exit 2, before any work (the first step of each
    command's work fails the test if reached; nothing on stdout), and nothing written: not even
    over the files the command reads."""
    import importlib

    forbid_work(monkeypatch, WORK[command], case)
    (tmp_path / "file").write_bytes(b"kept")
    (tmp_path / "dir").mkdir()
    run = make_run(tmp_path / "runs", "r", "dice", 32, 0.5, synthetic_root)
    (tmp_path / "link").symlink_to(run / "config.json")
    os.link(run / "best.pt", tmp_path / "hard")
    names = {"file": tmp_path / "file", "dir": tmp_path / "dir", "run": run, "data": synthetic_root,
             "image": synthetic_root / "Original" / "9.tif", "link": tmp_path / "link",
             "hard": tmp_path / "hard", "runs": tmp_path / "runs"}  # fmt: skip

    def on_disk() -> dict[Path, tuple[int, int, int]]:
        """Every path below tmp_path and the frames, down to its inode (a file replaced by a
        rename gets a new one)."""
        state = {}
        for p in [*tmp_path.rglob("*"), *synthetic_root.rglob("*")]:
            st = p.stat()
            state[p] = (st.st_ino, st.st_size, st.st_mtime_ns)
        return state

    before = on_disk()
    argv = [a.format(**names) for a in [*args, target]]
    if command == "synthetic":  # its output is its first argument
        argv = [argv[-1], *argv[:-1]]
    main = importlib.import_module(f"unet_scratch.{command}").main
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected.format(**names) in err, err
    assert out == ""
    assert (tmp_path / "file").read_bytes() == b"kept" and not list((tmp_path / "dir").iterdir())
    assert on_disk() == before  # nothing made, replaced or changed: the run's checkpoint and config either


def test_no_output_goes_into_the_synthetic_frames_either(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run trained on ``--data synthetic`` reads the frames generated in its runs' cache: an
    output there would damage them for every later run (the cache is not made again)."""
    from unet_scratch.synthetic import synthetic_root

    forbid_work(monkeypatch, ["evaluate.ensure_synthetic", "inference.load_checkpoint"], "synthetic data")
    run = make_run(tmp_path / "runs", "r", "dice", 32, 0.5, Path("synthetic"))
    masks = synthetic_root(tmp_path / "runs" / ".cache") / "Ground Truth"
    masks.mkdir(parents=True)
    (masks / "10.tif").write_bytes(b"a mask")
    assert evaluate_main([str(run), "--test-frames", "9-12", "--json", str(masks / "10.tif")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --json {masks / '10.tif'} would be written into {masks}, which holds the data: " \
        "choose another --json\n"
    assert (masks / "10.tif").read_bytes() == b"a mask"


def test_a_write_reaches_the_disk_before_it_replaces_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp file's data is flushed to the disk (fsync) before the rename puts it in place:
    after a power cut the name holds the old file or the whole new one, never an empty one."""
    from unet_scratch import files

    calls: list[tuple[str, int]] = []  # (call, inode of the file it concerns)
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append(("replace", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    (tmp_path / "f.json").write_text("old")
    files.atomic_write_bytes(b"new", tmp_path / "f.json")
    temp = os.stat(tmp_path / "f.json").st_ino  # the temp file, renamed into place
    assert calls.index(("fsync", temp)) < calls.index(("replace", temp))
    assert (tmp_path / "f.json").read_bytes() == b"new"


def test_files_written_as_one_keep_apart_under_long_names_and_never_twice(tmp_path: Path) -> None:
    """atomic_write_all writes each file into a temp file of its own: two names alike in their
    first 200 bytes (a long input name's _mask.png and _overlay.png) still get two, each lands
    with its own bytes and no temp file is left; a path given twice (or a link to another of
    the same group) is refused before anything is written."""
    from unet_scratch.errors import UserError
    from unet_scratch.files import atomic_write_all

    # names of 219 and 252 bytes (132 characters: cut by characters, the second's temp name would
    # not be cut and pass the 255-byte limit): cut short by bytes, a temp name stays under it
    for stem in ("b" * 210, "é" * 120):
        mask, overlay = tmp_path / f"{stem}_mask.png", tmp_path / f"{stem}_overlay.png"
        atomic_write_all([(mask, lambda f: f.write(b"mask")), (overlay, lambda f: f.write(b"overlay"))])
        assert mask.read_bytes() == b"mask" and overlay.read_bytes() == b"overlay"
    assert len(list(tmp_path.iterdir())) == 4  # and no temp file
    (tmp_path / "link.png").symlink_to(mask)
    for twice in (mask, tmp_path / "link.png"):
        with pytest.raises(UserError, match="would be written twice at once"):
            atomic_write_all([(mask, lambda f: f.write(b"new")), (twice, lambda f: f.write(b"other"))])
    assert mask.read_bytes() == b"mask"


def test_a_failed_write_is_reported_not_its_cleanup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A temp file that cannot be removed after a failed write must not hide why the write failed."""
    from unet_scratch.errors import UserError
    from unet_scratch.files import atomic_write

    def disk_full(f: object) -> None:
        raise OSError(28, "No space left on device")

    real_unlink = Path.unlink

    def unlink(self: Path, *args: object, **kwargs: object) -> None:
        if self.name.endswith(".tmp"):
            raise PermissionError(13, "Permission denied")
        real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(UserError, match=r"cannot write .*f\.bin \(No space left on device\): free disk"):
        atomic_write(tmp_path / "f.bin", disk_full)


def test_paths_that_are_not_plain_writable_files_are_refused_or_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from unet_scratch import files
    from unet_scratch.errors import UserError

    target = tmp_path / "target.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    files.atomic_write_bytes(b"new", link, "--json")  # through the link: the link stays a link
    assert link.is_symlink() and target.read_bytes() == b"new"
    long_name = tmp_path / ("a" * 250 + ".json")  # a legal name; its temp file's must be legal too
    files.atomic_write_bytes(b"x", long_name, "--json")
    assert long_name.read_bytes() == b"x" and [p.name for p in tmp_path.glob(".*")] == []
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="--json .*pipe is not a regular file"):  # not replaced
        files.atomic_write_bytes(b"x", fifo, "--json")
    real_exists = Path.exists

    def unreadable(self: Path, *args: object, **kwargs: object) -> bool:
        if self.name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", unreadable)
    with pytest.raises(UserError, match=r"--out .*locked/x: cannot look into .* \(Permission denied\)"):
        files.check_folder(tmp_path / "locked" / "x", "--out")
    monkeypatch.setattr(Path, "exists", real_exists)
    # as if read-only: readable and searchable, not writable
    monkeypatch.setattr(files.os, "access", lambda path, mode: Path(path) != tmp_path or not mode & os.W_OK)
    with pytest.raises(UserError, match=f"--json {tmp_path}/new/r.json: {tmp_path} is not writable"):
        files.check_file(tmp_path / "new" / "r.json", "--json")
    (tmp_path / "w").mkdir()
    files.check_file(tmp_path / "w" / "r.json", "--json")  # a writable folder below it passes
    for blank in ("", "  "):  # not read as ".", the current folder
        with pytest.raises(UserError, match="--out is empty: give a folder"):
            files.check_folder(blank, "--out")


def test_a_temp_file_of_another_users_process_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stale_temps asks whether a temp file's process still runs with signal 0: another user's
    process answers "permission denied", which means it runs: its temp file is not stale."""
    import time

    from unet_scratch import files

    tmp = tmp_path / ".e_mask.png.4711.tmp"
    tmp.write_bytes(b"half")
    os.utime(tmp, (time.time() - 120, time.time() - 120))

    def kill(pid: int, signal: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(files.os, "kill", kill)
    assert files.stale_temps(tmp_path, ("_mask.png",)) == []
    def gone(pid: int, signal: int) -> None:
        raise ProcessLookupError(3, "No such process")

    monkeypatch.setattr(files.os, "kill", gone)
    assert files.stale_temps(tmp_path, ("_mask.png",)) == [tmp]  # a process that is gone: stale


def as_a_terminal() -> None:
    """SIGINT at its default, as a terminal starts a command: a shell without job control (CI,
    a background job) starts its children with SIGINT ignored, and Python then has no Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# a command's work, run by exit_status in a fresh interpreter, as each CLI's main runs it
STOPPED = """
import os, signal, sys
from unet_scratch.errors import exit_status, exit_with

def work():
    if sys.argv[1] == "ctrl-c":
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
    for i in range(1_000_000):  # more than a pipe holds: the reader leaves before the end
        print("line", i)
    return 0

exit_with(exit_status(work))
"""


def test_ctrl_c_is_one_line_and_ends_the_command_by_sigint() -> None:
    """One line, no traceback, and the process ends killed by SIGINT (a shell shows 130), so a
    script or a loop running the command stops too: an exit with status 130 would not stop it."""
    command = [sys.executable, "-c", STOPPED, "ctrl-c"]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=as_a_terminal)
    assert done.returncode == -signal.SIGINT
    assert done.stderr == "\ninterrupted: the files written so far are complete\n" and not done.stdout


def test_ctrl_c_in_a_real_command(tmp_path: Path) -> None:
    """``python -m unet_scratch.synthetic`` stopped by SIGINT while it writes frames: the same
    line and the same end, through the command's own __main__."""
    out = tmp_path / "frames"
    proc = subprocess.Popen(
        [sys.executable, "-m", "unet_scratch.synthetic", str(out), "--count", "20000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, preexec_fn=as_a_terminal,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (out / "Original").is_dir() or not any((out / "Original").iterdir()):  # at work
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # never leave 20,000 frames being written behind
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGINT
    assert err == "\ninterrupted: the files written so far are complete\n"


def test_a_reader_that_stops_reading_ends_the_command_quietly() -> None:
    """``predict.py ... | head -2``: status 141 (as SIGPIPE gives), no traceback on stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPED, "pipe"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline() == b"line 0\n"
    proc.stdout.close()  # the reader goes away
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141 and err == b""


def test_a_broken_pipe_is_the_readers_only_and_leaves_an_in_process_callers_stdout_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A BrokenPipeError ends a command quietly with status 141 only where the reader of its
    output has gone (``| head``); while the output is still read it is another pipe's (a socket,
    a worker) and a real error, raised. A caller of ``main()`` in its own process (a test, a
    notebook) keeps its stdout: pointing it at /dev/null is for the process's own exit
    (``exit_with``). train.py (its own Ctrl-C line, through the same exit_status) does the same."""

    def gone() -> int:
        raise BrokenPipeError

    monkeypatch.setattr("unet_scratch.train.run", lambda args: gone())
    with pytest.raises(BrokenPipeError):  # stdout: pytest's capture file, read
        exit_status(gone)
    with pytest.raises(BrokenPipeError):
        train_main(["--data", "unused"])
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(write_end, 1)
        before = os.fstat(1)
        assert exit_status(gone) == 141
        assert train_main(["--data", "unused"]) == 141
        after = os.fstat(1)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(write_end)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_under_torchrun_only_rank_0_prints_the_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every rank meets the same bad input: one line in the log, not one per process; every
    rank still exits with 2 (torchrun reports the first failure)."""

    def bad(args: object) -> int:
        raise UserError("--data x does not exist")

    monkeypatch.setattr("unet_scratch.train.run", bad)
    for rank, said in (("1", ""), ("0", "error: --data x does not exist\n")):
        monkeypatch.setenv("RANK", rank)
        assert train_main(["--data", "unused"]) == 2
        assert capsys.readouterr().err == said


def test_ctrl_c_in_a_pipeline_whose_reader_dies_too(tmp_path: Path) -> None:
    """``python train.py ... | tee log`` and Ctrl-C: the reader dies of the same SIGINT, so the
    command's last flush of stdout meets a closed pipe; it still ends by SIGINT, without
    "Exception ignored" and status 120."""
    code = (
        "import sys, time\n"
        "from unet_scratch.errors import exit_status, exit_with\n"
        "def work():\n"
        "    print('a line still in the buffer')\n"
        "    open(sys.argv[1], 'w').close()\n"
        "    time.sleep(60)\n"
        "    return 0\n"
        "exit_with(exit_status(work))\n"
    )
    ready = tmp_path / "ready"
    # stdout buffered, as Python has it on a pipe unless PYTHONUNBUFFERED is set
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(ready)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=REPO, env=buffered, start_new_session=True, preexec_fn=as_a_terminal,
    )  # fmt: skip

    reader = subprocess.Popen(
        ["cat"], stdin=writer.stdout, stdout=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=as_a_terminal,
    )  # fmt: skip
    writer.stdout.close()  # the reader holds the pipe's only read end
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.05)
        # what a terminal sends the whole pipeline; the reader's end first, so that the writer's
        # last flush surely meets a closed pipe
        os.killpg(reader.pid, signal.SIGINT)
        assert reader.wait(timeout=60) == -signal.SIGINT
        os.killpg(writer.pid, signal.SIGINT)
        err = writer.stderr.read().decode()
        assert writer.wait(timeout=60) == -signal.SIGINT
        assert err == "\ninterrupted: the files written so far are complete\n"
    finally:
        for proc in (writer, reader):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
