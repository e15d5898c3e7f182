"""Interruption: a kill -9 mid-run, a crash inside a checkpoint write, a failed write and Ctrl-C
never lose the last good checkpoint, and --resume then ends with exactly the weights (and
weight average) of an uninterrupted run (CPU, deterministic).

``KILL_TRIALS=20 pytest tests/test_interrupt.py`` runs more random kill -9 trials than the default 1
(the crash inside a checkpoint write, the moment a random kill is least likely to hit, has its
own deterministic test). The resumes run in-process: a new process would only add start-up time.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unet_scratch import checkpoint
from unet_scratch.checkpoint import load_checkpoint
from unet_scratch.train import main

from .test_bad_input import as_a_terminal

REPO = Path(__file__).resolve().parents[1]
TRIALS = int(os.environ.get("KILL_TRIALS", "1"))
EPOCHS = 2


def flags(root: Path, out: Path, name: str) -> list[str]:
    return [
        "--data", str(root), "--out", str(out), "--name", name, "--train-frames", "1-6",
        "--val-frames", "7-8", "--input-size", "32", "--batch-size", "2", "--epochs", str(EPOCHS),
        "--device", "cpu",
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_process(*args: str, hooks: tuple[str, ...] = ()) -> list[str]:
    if hooks:
        return [sys.executable, str(REPO / "tests" / "harness.py"), *hooks, "--", *args]
    return [sys.executable, "train.py", *args]


def resume_here(args: list[str]) -> int:
    """``--resume`` in this process, on one thread like the runs it continues: the same float
    reduction order, so the weights can be compared bit for bit (``--threads`` may differ from
    the run's own 0, which meant OMP_NUM_THREADS=1 there)."""
    return main([*args, "--resume", "--threads", "1"])


def final_state(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["epoch"] == EPOCHS
    return {"model": ckpt["model"], "ema": ckpt["ema"]}


def assert_same(got: dict[str, dict[str, torch.Tensor]], want: dict[str, dict[str, torch.Tensor]]) -> None:
    for part in ("model", "ema"):
        assert got[part].keys() == want[part].keys()
        different = [k for k in want[part] if not torch.equal(got[part][k], want[part][k])]
        assert not different, f"{part}: {len(different)} tensors differ, e.g. {different[0]}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    """An uninterrupted run: the weights every interrupted-and-resumed run must end with."""
    out = tmp_path_factory.mktemp("straight")
    t0 = time.perf_counter()
    done = subprocess.run(
        train_process(*flags(synthetic_root, out, "s")), cwd=REPO, env=env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    epoch_seconds = load_checkpoint(out / "s" / "last.pt")["history"][-1]["epoch_seconds"]
    return {"state": final_state(out / "s"), "seconds": time.perf_counter() - t0, "epoch": epoch_seconds}


def test_kill_9_mid_run_then_resume_is_exact(
    tmp_path: Path, synthetic_root: Path, straight: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(1234)
    at_kill = []  # the epoch last.pt held when each kill came
    for trial in range(TRIALS):
        args = flags(synthetic_root, tmp_path, f"k{trial}")
        proc = subprocess.Popen(
            train_process(*args), cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        last = tmp_path / f"k{trial}" / "last.pt"
        deadline = time.time() + 120
        while not last.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        # epoch 1 is saved: kill somewhere in epoch 2's steps, validation or checkpoint writes
        time.sleep(rng.uniform(0.0, 0.8) * straight["epoch"])
        assert proc.poll() is None, "the run ended before the kill: not a mid-run trial"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(last)  # raises if the kill left it half-written
        at_kill.append(ckpt["epoch"])
        assert 1 <= ckpt["epoch"] < EPOCHS, "last.pt must hold a finished epoch, not the end of the run"
        capsys.readouterr()
        assert resume_here(args) == 0
        assert f"resuming {last.parent} after epoch {ckpt['epoch']}" in capsys.readouterr().out
        assert_same(final_state(last.parent), straight["state"])
        assert not list(last.parent.glob(".*.tmp"))  # no temp file left behind after the resume
    print(
        f"kill -9 trials: {TRIALS}, each killed mid-run and resumed to identical weights; at_kill {at_kill}"
    )


def test_crash_inside_a_checkpoint_write(tmp_path: Path, synthetic_root: Path, straight: dict) -> None:
    args = flags(synthetic_root, tmp_path, "w")
    died = subprocess.run(
        train_process(*args, hooks=("--die-in-write", "last.pt@2")), cwd=REPO, env=env(), capture_output=True
    )
    assert died.returncode == -signal.SIGKILL  # killed half-way through writing epoch 2's last.pt
    run_dir = tmp_path / "w"
    # the previous last.pt is whole (a writer without a temporary file would have left it
    # half-written: the hook kills a write to last.pt itself too) ...
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    stale = list(run_dir.glob(".last.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > 0  # ... and the half-written file is beside it
    assert resume_here(args) == 0
    assert_same(final_state(run_dir), straight["state"])
    assert not list(run_dir.glob(".*.tmp"))  # the resume removed it


def test_failed_write_keeps_the_previous_checkpoint(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_save = torch.save

    def disk_full_at_epoch_2(obj: object, f: object, *args: object, **kwargs: object) -> None:
        if isinstance(obj, dict) and obj.get("epoch") == 2 and ".last.pt." in str(getattr(f, "name", "")):
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", disk_full_at_epoch_2)
    assert main(flags(synthetic_root, tmp_path, "f")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write {tmp_path / 'f' / 'last.pt'} (No space left on device)" in err
    assert "the previous last.pt is kept" in err
    assert load_checkpoint(tmp_path / "f" / "last.pt")["epoch"] == 1
    assert not list((tmp_path / "f").glob(".*.tmp"))
    with pytest.raises(checkpoint.UserError) as e:  # a first write that fails has nothing to keep
        checkpoint.atomic_torch_save({"epoch": 2}, tmp_path / "new" / ".last.pt.x")
    assert "cannot write" in str(e.value) and "kept" not in str(e.value)


def test_ctrl_c_ends_train_by_sigint_and_keeps_last(tmp_path: Path, synthetic_root: Path) -> None:
    cmd = train_process(*flags(synthetic_root, tmp_path, "c"))
    cmd[cmd.index("--epochs") + 1] = "1000"
    # a terminal delivers Ctrl-C to a process whose SIGINT is at its default (as_a_terminal)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=as_a_terminal,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (tmp_path / "c" / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # never leave a 1000-epoch run behind
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGINT  # as a shell expects of Ctrl-C: a loop running it stops
    last = f"interrupted: {tmp_path / 'c' / 'last.pt'} holds the last epoch saved; continue with --resume"
    assert err.strip().splitlines()[-1] == last and "Traceback" not in err
    assert load_checkpoint(tmp_path / "c" / "last.pt")["epoch"] >= 1


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_last_checkpoint_is_reported(
    tmp_path: Path, synthetic_root: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = flags(synthetic_root, tmp_path, "d")
    args[args.index("--epochs") + 1] = "1"
    assert main(args) == 0
    last = tmp_path / "d" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000] if damage == "truncate" else b"garbage")
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last.pt is damaged or not a checkpoint" in err
