"""Interruption: kill -9 at random moments and Ctrl-C never lose the last good checkpoint,
and --resume then ends with the same weights as an uninterrupted run (CPU, deterministic).

``KILL_TRIALS=20 pytest tests/test_interrupt.py`` runs more kill -9 trials than the default 3.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unet_scratch.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TRIALS = int(os.environ.get("KILL_TRIALS", "3"))


def command(root: Path, out: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "train.py", "--data", str(root), "--out", str(out), "--name", name,
        "--train-frames", "1-6", "--val-frames", "7-8", "--input-size", "32", "--batch-size", "2",
        "--epochs", "3", *extra,
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["epoch"] == 3
    return ckpt["model"]


def test_kill_9_at_random_moments(tmp_path: Path, synthetic_root: Path) -> None:
    out = tmp_path / "runs"
    t0 = time.perf_counter()
    subprocess.run(
        command(synthetic_root, out, "straight"), cwd=REPO, env=env(), check=True, capture_output=True
    )
    duration = time.perf_counter() - t0
    reference = final_weights(out / "straight")

    rng = random.Random(1234)
    loadable = identical = 0
    killed_after = [0, 0, 0, 0]  # trials by the epoch last.pt held when the kill came
    for trial in range(TRIALS):
        name = f"killed{trial}"
        proc = subprocess.Popen(
            command(synthetic_root, out, name),
            cwd=REPO,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.15, 0.8) * duration)  # mid-epoch, mid-validation or mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        run_dir = out / name
        if (run_dir / "last.pt").exists():
            killed_after[load_checkpoint(run_dir / "last.pt")["epoch"]] += 1  # raises if half-written
        else:
            killed_after[0] += 1  # killed during epoch 1: nothing to lose yet
        loadable += 1
        resume = ["--resume"] if run_dir.exists() else []
        done = subprocess.run(
            command(synthetic_root, out, name, *resume), cwd=REPO, env=env(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        got = final_weights(run_dir)
        identical += all(torch.equal(got[k], reference[k]) for k in reference)
        assert not list(run_dir.glob(".*.tmp"))  # no temp file left behind after the resume
        shutil.rmtree(run_dir)
    print(
        f"kill -9 trials: {TRIALS}, loadable checkpoint: {loadable}, identical after resume: {identical}; "
        f"last.pt held epoch 0/1/2/3 at the kill: {killed_after}"
    )
    assert loadable == identical == TRIALS


def test_ctrl_c_exits_130_and_keeps_last(tmp_path: Path, synthetic_root: Path) -> None:
    out = tmp_path / "runs"
    cmd = command(synthetic_root, out, "c")
    cmd[cmd.index("--epochs") + 1] = "1000"
    # a terminal delivers Ctrl-C to a process whose SIGINT is at its default; a non-interactive
    # shell starts background jobs with SIGINT ignored, so restore the default as a terminal has it
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (out / "c" / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # never leave a 1000-epoch run behind
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("interrupted:") and "Traceback" not in err
    assert load_checkpoint(out / "c" / "last.pt")["epoch"] >= 1


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_last_checkpoint_is_reported(tmp_path: Path, synthetic_root: Path, damage: str) -> None:
    out = tmp_path / "runs"
    cmd = command(synthetic_root, out, "d")
    cmd[cmd.index("--epochs") + 1] = "1"
    subprocess.run(cmd, cwd=REPO, env=env(), check=True, capture_output=True)
    last = out / "d" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000] if damage == "truncate" else b"garbage")
    done = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env(), capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "last.pt is damaged or not a checkpoint" in done.stderr
