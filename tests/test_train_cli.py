"""train.py end to end on synthetic data: files, --loss all, determinism, resume, errors."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch

from unet_scratch import engine, runfolder
from unet_scratch.config import LOSS_NAMES, TrainConfig, usable_cpus
from unet_scratch.data import frame_fingerprint, load_frames
from unet_scratch.errors import UserError
from unet_scratch.inference import load_run
from unet_scratch.metrics import confusion, dice_score, iou_score, pooled_scores, soft_dice
from unet_scratch.runfolder import state_sha256
from unet_scratch.synthetic import write_dataset
from unet_scratch.train import configs_from_args, cpu_threads, main, parse_args

# --keep best: no 520 MB last.pt at the end of a run (2 of a tiny run's 4.5 s); a test that
# needs last.pt (to resume, to read the average) says --keep all
SMALL = ["--train-frames", "1-6", "--val-frames", "7-9", "--input-size", "64", "--batch-size", "2",
         "--device", "cpu"]  # fmt: skip
TINY = [*SMALL, "--keep", "best"]


def train(tmp_path: Path, root: Path, *extra: str) -> int:
    return main(["--data", str(root), "--out", str(tmp_path / "runs"), *TINY, *extra])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_cli_writes_a_complete_run(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the default --keep (all): what a user's run leaves
    assert main(["--data", str(synthetic_root), "--out", str(tmp_path / "runs"), *SMALL, "--epochs", "2",
                 "--loss", "jaccard"]) == 0  # fmt: skip
    run = tmp_path / "runs" / "jaccard"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "last.pt", "metrics.csv"]
    config = json.loads((run / "config.json").read_text())
    assert config["loss"] == "jaccard" and config["input_size"] == 64 and config["run"]["train_count"] == 6
    assert config["run"]["data_check"] == {"frame": 1, "sha256": frame_fingerprint(synthetic_root, 1)}
    rows = read_csv(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0 <= float(r["val_dice"]) <= 1 for r in rows)
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and "optimizer" in last and last["config"]["loss"] == "jaccard"
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epoch"] == best["best"]["epoch"]
    assert float(rows[best["epoch"] - 1]["val_iou"]) == max(float(r["val_iou"]) for r in rows)
    # the best epoch's validation scores, recomputed from best.pt on frames 7-9 with the metric functions
    model, _, _ = load_run(run)
    images, masks = load_frames(synthetic_root, [7, 8, 9], 64)
    prob = engine.predict(model, images, engine.amp_dtype(torch.device("cpu"), "auto"))
    tp, fp, fn = confusion(prob, masks)
    expected = {
        "val_dice": dice_score(prob, masks).mean().item(),
        "val_iou": iou_score(prob, masks).mean().item(),
        "val_soft_dice": soft_dice(prob, masks).mean().item(),
        "val_pooled_dice": pooled_scores(tp, fp, fn)[0],
    }
    got = {key: float(rows[best["epoch"] - 1][key]) for key in expected}
    assert got == pytest.approx(expected, abs=2e-6)
    # two epochs leave a model that may predict no polyp at 0.5 (Dice, IoU 0): the soft Dice is what
    # makes this a real comparison of the pipeline (val frames, the weights validated, best.pt);
    # the columns' mapping is checked with scripted scores in test_engine
    assert expected["val_soft_dice"] > 0.01
    out = capsys.readouterr().out
    assert "epoch  2/2" in out and "img/s" in out and "ETA" in out
    # the second run reads the cache, decodes nothing
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--loss", "dice") == 0
    assert "from cache" in capsys.readouterr().out


def test_loss_all_starts_from_identical_weights(tmp_path: Path, synthetic_root: Path) -> None:
    assert (
        train(
            tmp_path,
            synthetic_root,
            "--epochs",
            "1",
            "--loss",
            "all",
            "--val-frames",
            "none",
            "--keep",
            "best",
        )
        == 0
    )
    runs = [tmp_path / "runs" / name for name in ("dice", "jaccard", "focal", "combined")]
    shas = {json.loads((r / "config.json").read_text())["run"]["init_sha256"] for r in runs}
    assert len(shas) == 1
    # and the fingerprint is that of the seed's freshly built model
    fresh = engine.build_model(engine.TrainConfig(seed=47))
    assert shas == {state_sha256(fresh)}
    # different losses do train differently from there
    assert not torch.equal(
        weights(runs[0] / "best.pt")["head.weight"], weights(runs[2] / "best.pt")["head.weight"]
    )


def test_same_seed_same_losses(tmp_path: Path, synthetic_root: Path) -> None:
    for name in ("a", "b"):
        assert train(tmp_path, synthetic_root, "--epochs", "2", "--name", name, "--keep", "best") == 0
    a, b = (read_csv(tmp_path / "runs" / n / "metrics.csv") for n in ("a", "b"))
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r["val_dice"] for r in a] == [r["val_dice"] for r in b]


# two recipes that differ in every lever a resume must restore: optimiser and its state, the lr
# schedule's position, the augmentations' random stream and the weight average
RECIPES = {
    "reference": ["--preset", "reference"],  # Adam 1e-4 constant, flips, no average
    "defaults": ["--ema", "0.9"],  # AdamW + warm-up + cosine, all augmentations, a weight average
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_resume_equals_uninterrupted(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, recipe: str
) -> None:
    flags = ["--epochs", "2", *RECIPES[recipe], "--keep", "all"]
    assert train(tmp_path, synthetic_root, *flags, "--name", "straight") == 0

    real = engine.train_one_epoch

    def interrupt_epoch_2(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if args[6] == 2:  # the epoch argument
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", interrupt_epoch_2)
    assert train(tmp_path, synthetic_root, *flags, "--name", "resumed") == 130
    last = torch.load(tmp_path / "runs/resumed/last.pt", weights_only=True)
    assert last["epoch"] == 1
    if recipe == "reference":  # as a last.pt written before checkpoints held the fingerprints
        del last["data_check"], last["init_sha256"]
        torch.save(last, tmp_path / "runs/resumed/last.pt")
    monkeypatch.setattr(engine, "train_one_epoch", real)
    assert train(tmp_path, synthetic_root, *flags, "--name", "resumed", "--resume") == 0

    a, b = (torch.load(tmp_path / f"runs/{n}/last.pt", weights_only=True) for n in ("straight", "resumed"))
    assert ("ema" in a) == (recipe == "defaults") and a.keys() == b.keys()
    for part in ("model", "ema") if recipe == "defaults" else ("model",):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    moments = [(x, y) for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values())
               for x, y in zip(sa.values(), sb.values())]  # fmt: skip
    assert moments and all(torch.equal(x, y) for x, y in moments)  # Adam's moments too
    best_a, best_b = (
        torch.load(tmp_path / f"runs/{n}/best.pt", weights_only=True) for n in ("straight", "resumed")
    )
    assert best_a["epoch"] == best_b["epoch"] and all(
        torch.equal(best_a["model"][k], best_b["model"][k]) for k in best_a["model"]
    )
    # the checkpoints carry the fingerprint of the first training frame, also those written
    # after a resume (from last.pt, or from config.json where last.pt lacks it)
    assert b["epoch"] == 2  # written by the resumed session
    fingerprint = {"frame": 1, "sha256": frame_fingerprint(synthetic_root, 1)}
    assert [c["data_check"] for c in (a, b, best_a, best_b)] == [fingerprint] * 4
    # and the initial weights' fingerprint, in the checkpoints and in the rewritten config.json
    configs = [json.loads((tmp_path / f"runs/{n}/config.json").read_text()) for n in ("straight", "resumed")]
    assert a["init_sha256"] and [c["init_sha256"] for c in (b, best_b)] == [a["init_sha256"]] * 2
    assert [c["run"]["init_sha256"] for c in configs] == [a["init_sha256"]] * 2
    rows = read_csv(tmp_path / "runs/resumed/metrics.csv")
    straight = read_csv(tmp_path / "runs/straight/metrics.csv")
    for key in ("train_loss", "val_dice", "lr"):
        assert [r[key] for r in rows] == [r[key] for r in straight]


def test_resume_with_other_settings_is_refused(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--keep", "all") == 0
    # the data are checked against last.pt's fingerprint (the weights resumed), not config.json's
    config_file = tmp_path / "runs" / "dice" / "config.json"
    kept = config_file.read_text()
    config = json.loads(kept)
    config["run"]["data_check"]["sha256"] = "0" * 16
    config_file.write_text(json.dumps(config))
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--keep", "all", "--resume") == 0
    config_file.write_text(kept)
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--lr", "0.01", "--resume") == 2
    assert "lr 0.001 -> 0.01" in capsys.readouterr().err
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--seed", "3", "--resume") == 2
    assert "seed 47 -> 3" in capsys.readouterr().err
    assert train(tmp_path, synthetic_root, "--epochs", "1") == 2  # would clobber the run
    assert "already holds a run" in capsys.readouterr().err
    run = tmp_path / "runs" / "dice"
    # --data may name the data's new place, not other data (the first training frame's pixels)
    other = write_dataset(tmp_path / "other", range(1, 13), seed=5)
    assert train(tmp_path, other, "--epochs", "1", "--resume") == 2
    err = capsys.readouterr().err
    assert err == f"error: --resume: frame 1 of {other} differs from the one {run} trained on: " \
        "give the run's own --data, or add --force\n"  # fmt: skip
    # --force takes the changed settings and the other data: epoch 2 is trained at the new
    # learning rate, weight decay and beta2, not at those the optimiser state was saved with
    started = json.loads((run / "config.json").read_text())["run"]
    forced = ["--epochs", "2", "--lr", "0.01", "--resume", "--force", "--keep", "all"]
    forced += ["--weight-decay", "0.02", "--adam-beta2", "0.95"]
    # stopped in its first epoch, the forced session saved nothing: config.json still says what
    # the checkpoints were trained with (a plain resume on the first data is not refused)
    before = (run / "config.json").read_bytes()
    real = engine.train_one_epoch

    def interrupt(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train_one_epoch", interrupt)
    assert train(tmp_path, other, *forced) == 130
    monkeypatch.setattr(engine, "train_one_epoch", real)
    assert (run / "config.json").read_bytes() == before
    assert train(tmp_path, other, *forced) == 0
    assert len(read_csv(run / "metrics.csv")) == 2
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["config"]["lr"] == 0.01
    group = last["optimizer"]["param_groups"][0]
    assert (group["weight_decay"], tuple(group["betas"])) == (0.02, (0.9, 0.95))
    # config.json and the checkpoints now describe the run as trained on: these settings, the
    # other data (evaluate.py's default --data and data check), the first initial weights
    config = json.loads((run / "config.json").read_text())
    assert (config["lr"], config["epochs"], config["data"]) == (0.01, 2, str(other))
    now = {"frame": 1, "sha256": frame_fingerprint(other, 1)}
    assert now != started["data_check"]
    assert config["run"]["data_check"] == last["data_check"] == now
    assert config["run"]["init_sha256"] == last["init_sha256"] == started["init_sha256"]
    capsys.readouterr()
    finished = [*forced[:5], *forced[6:]]  # the same flags and data, no --force: a finished run, said so
    assert train(tmp_path, other, *finished) == 0
    assert "already trained 2 epochs (--epochs 2): nothing left to train" in capsys.readouterr().out
    assert len(read_csv(run / "metrics.csv")) == 2  # not trained
    # --overwrite starts the run again (TINY: --keep best, so best.pt alone is left) ...
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--overwrite") == 0
    assert len(read_csv(run / "metrics.csv")) == 1 and not (run / "last.pt").exists()
    capsys.readouterr()
    # ... and a run kept as best.pt alone is a run: not replaced without --overwrite
    assert train(tmp_path, synthetic_root, "--epochs", "1") == 2
    assert "already holds a run" in capsys.readouterr().err


def test_threads_are_set_for_the_run_recorded_and_given_back(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # on some CPUs one thread and two give different runs, so the count a run trained with is
    # part of how to repeat it; ablation.py calls main() in-process, so the caller's count
    # must come back afterwards, also when the run fails
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2  # a count this process does not already have
    cpus = usable_cpus()
    if want > cpus:
        pytest.skip("needs two CPUs to set a count other than this process's own")
    seen: list[int] = []
    real_epoch = engine.train_one_epoch

    def counting_epoch(*args: object, **kwargs: object) -> dict:
        seen.append(torch.get_num_threads())
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", counting_epoch)
    flags = ["--epochs", "1", "--val-frames", "none", "--keep", "all"]  # resumed below
    try:
        assert train(tmp_path, synthetic_root, *flags, "--threads", str(want), "--name", "set") == 0
        assert seen == [want] and torch.get_num_threads() == before
        assert f"{cpu_threads(want)})" in capsys.readouterr().out
        assert train(tmp_path, synthetic_root, *flags, "--name", "own") == 0  # 0: torch's own count
        assert seen == [want, before] and f"{cpu_threads(before)})" in capsys.readouterr().out
        recorded = [json.loads((tmp_path / "runs" / n / "config.json").read_text()) for n in ("set", "own")]
        assert [(c["threads"], c["run"]["threads"]) for c in recorded] == [(want, want), (0, before)]

        # a resume with another count goes on, and says the run will not match an uninterrupted one
        set_again = [*flags, "--name", "set", "--resume"]
        assert train(tmp_path, synthetic_root, *set_again) == 0
        warning = f"set trained with {cpu_threads(want)}, this resume has {cpu_threads(before)}"
        assert warning in capsys.readouterr().err
        assert train(tmp_path, synthetic_root, *set_again, "--threads", str(want)) == 0
        assert train(tmp_path, synthetic_root, *flags, "--name", "own", "--resume") == 0  # the same count
        assert capsys.readouterr().err == ""
        # a run that fails after the count was set gives the caller's count back all the same
        nowhere = [*flags, "--name", "nowhere", "--resume", "--threads", str(want)]
        assert train(tmp_path, synthetic_root, *nowhere) == 2
        assert torch.get_num_threads() == before and "does not exist" in capsys.readouterr().err
        limits = f"--threads must be from 0 (torch's own count) to the {cpus} CPUs this process may use"
        for bad in (-1, cpus + 1):
            assert train(tmp_path, synthetic_root, *flags, "--threads", str(bad), "--name", "bad") == 2
            assert capsys.readouterr().err == f"error: {limits}, got {bad}\n"
    finally:
        torch.set_num_threads(before)


def test_missing_data_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "download" in err and "--data synthetic" in err
    assert not (tmp_path / "runs" / "dice").exists()


def test_diverging_run_stops_with_epoch_and_step(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = train(
        tmp_path, synthetic_root, "--epochs", "2", "--loss", "focal", "--lr", "1e12", "--optimizer", "sgd"
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "epoch 1, step" in err and err.endswith("lower --lr (no epoch was saved: nothing is kept)\n")
    assert not (tmp_path / "runs" / "focal").exists()  # nothing half-written left behind


def test_a_run_diverging_after_a_checkpoint_says_it_is_kept(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = engine.train_one_epoch

    def diverge_in_epoch_2(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if args[6] == 2:  # the epoch argument
            raise engine.Diverged("the loss became nan at epoch 2, step 1: training diverged; lower --lr")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", diverge_in_epoch_2)
    assert train(tmp_path, synthetic_root, "--epochs", "2") == 2
    run = tmp_path / "runs" / "dice"
    assert capsys.readouterr().err.endswith(f"lower --lr ({run / 'last.pt'} holds the last epoch saved)\n")
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    # --checkpoint-every 5: epoch 1's best.pt (validation improved) but no last.pt yet: kept, and said
    assert train(tmp_path, synthetic_root, "--epochs", "2", "--checkpoint-every", "5", "--overwrite") == 2
    assert capsys.readouterr().err.endswith(
        f"lower --lr ({run / 'best.pt'} holds the best epoch so far, with no last.pt to resume from)\n"
    )
    assert sorted(f.name for f in run.iterdir()) == ["best.pt", "config.json", "metrics.csv"]
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == 1


def test_ctrl_c_in_the_first_epoch_says_nothing_is_kept(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C before any checkpoint: the run folder is removed and the line says so, instead of
    sending the user to a last.pt that is not there."""

    def ctrl_c(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train_one_epoch", ctrl_c)
    assert train(tmp_path, synthetic_root, "--epochs", "2") == 130
    assert capsys.readouterr().err == "\ninterrupted: no epoch was saved: nothing is kept\n"
    assert not (tmp_path / "runs" / "dice").exists()


def test_compile_trains_the_same_and_saves_plain_keys(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # torch.compile with the "eager" backend traces the model with TorchDynamo but runs the
    # same kernels, so the losses match the uncompiled run; inductor's code generation takes
    # minutes on a CPU and is measured by benchmarks/bench.py --compile instead
    calls = []
    real_compile = torch.compile

    def eager_compile(model: torch.nn.Module, **kwargs: object) -> torch.nn.Module:
        calls.append(type(model).__name__)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    flags = ["--epochs", "1", "--val-frames", "none", "--amp", "off", "--keep", "best"]
    assert train(tmp_path, synthetic_root, *flags, "--compile", "--name", "compiled") == 0
    assert calls == ["UNetResNet50"]
    assert train(tmp_path, synthetic_root, *flags, "--name", "plain") == 0
    assert capsys.readouterr().out.count("1 epoch, cpu fp32, ") == 2  # --amp off, named in the first line
    compiled, plain = (tmp_path / "runs" / n / "best.pt" for n in ("compiled", "plain"))
    assert list(weights(compiled)) == list(weights(plain))  # no "_orig_mod." prefixes
    loss = [float(read_csv(p.parent / "metrics.csv")[0]["train_loss"]) for p in (compiled, plain)]
    assert loss[0] == pytest.approx(loss[1], rel=1e-4)


def test_checkpoint_every_and_keep_best(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    written: list[tuple[str, int]] = []
    real_save = runfolder.atomic_torch_save

    def record(state: dict, path: Path) -> None:
        written.append((Path(path).name, state["epoch"]))
        real_save(state, path)

    monkeypatch.setattr(runfolder, "atomic_torch_save", record)
    flags = ["--epochs", "3", "--val-frames", "none", "--checkpoint-every", "2", "--keep", "best"]
    assert train(tmp_path, synthetic_root, *flags) == 0
    # without validation best.pt follows last.pt's cadence; --keep best writes no final last.pt
    assert written == [("best.pt", 2), ("last.pt", 2), ("best.pt", 3)]  # no final last.pt to delete
    run = tmp_path / "runs" / "dice"
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt",
        "config.json",
        "metrics.csv",
    ]  # last.pt dropped
    assert len(read_csv(run / "metrics.csv")) == 3  # every epoch is still recorded
    capsys.readouterr()
    assert train(tmp_path, synthetic_root, *flags, "--resume") == 2
    assert "holds best.pt but no last.pt" in capsys.readouterr().err
    written.clear()  # with validation a better epoch is saved at once, whatever the cadence
    flags = ["--epochs", "2", "--checkpoint-every", "5", "--keep", "all"]
    assert train(tmp_path, synthetic_root, *flags, "--name", "v") == 0
    assert ("last.pt", 1) not in written and ("last.pt", 2) in written
    best_epoch = torch.load(tmp_path / "runs" / "v" / "best.pt", weights_only=True)["epoch"]
    assert ("best.pt", best_epoch) in written


def test_seeds_make_one_run_per_seed(capsys: pytest.CaptureFixture[str]) -> None:
    configs = configs_from_args(parse_args(["--loss", "all", "--seeds", "48,3", "--name", "x"]))
    got = [(c.loss, c.seed, c.name) for c in configs]
    assert got == [(loss, seed, f"x-{loss}-s{seed}") for loss in LOSS_NAMES for seed in (48, 3)]
    assert [(c.seed, c.name) for c in configs_from_args(parse_args(["--seed", "5"]))] == [(5, "dice")]
    for bad in (["--seeds", "4,4"], ["--seeds", "4,x"], ["--seeds", "4", "--seed", "3"]):
        with pytest.raises(SystemExit) as e:
            parse_args(bad)
        assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_a_synthetic_run_records_the_fingerprint_of_its_frames(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--data synthetic`` trains on frames generated in the cache: the fingerprint evaluate.py
    checks is of those frames (the word "synthetic" is not a folder)."""
    from unet_scratch import train as train_module

    monkeypatch.setattr(train_module, "ensure_synthetic", lambda cache_dir: synthetic_root)  # no 612 frames
    argv = ["--data", "synthetic", "--out", str(tmp_path / "runs"), *TINY, "--epochs", "1"]
    assert main(argv) == 0
    config = json.loads((tmp_path / "runs" / "dice" / "config.json").read_text())
    assert config["run"]["data_check"] == {"frame": 1, "sha256": frame_fingerprint(synthetic_root, 1)}


def test_synthetic_runs_go_to_their_own_folder() -> None:
    assert configs_from_args(parse_args(["--data", "synthetic"]))[0].out == "runs/synthetic"
    assert configs_from_args(parse_args([]))[0].out == "runs"
    assert configs_from_args(parse_args(["--data", "synthetic", "--out", "x"]))[0].out == "x"


FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_resnet50_encoder_state_dict.json"


def torchvision_file(path: Path, edit=None) -> Path:  # noqa: ANN001
    """A state dict in torchvision's resnet50 layout (fc.* included), random values, as torchvision saves."""
    shapes = json.loads(FIXTURE.read_text())["state_dict"]
    g = torch.Generator().manual_seed(3)
    state = {k: torch.tensor(5) if k.endswith("num_batches_tracked") else 0.05 * torch.randn(v, generator=g)
             for k, v in shapes.items()}  # fmt: skip
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048, generator=g), torch.zeros(1000)
    if edit:
        edit(state)
    torch.save(state, path)
    return path


def test_encoder_weights_from_a_torchvision_file(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights_file = torchvision_file(tmp_path / "resnet50-test.pth")
    started = {}
    real = engine.train_one_epoch

    def record_start(model: torch.nn.Module, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        started.setdefault("w", model.encoder.conv1.weight.detach().clone())
        return real(model, *args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", record_start)
    assert (
        train(
            tmp_path,
            synthetic_root,
            "--epochs",
            "1",
            "--encoder-weights",
            str(weights_file),
            "--keep",
            "best",
        )
        == 0
    )
    saved = torch.load(weights_file, weights_only=True)
    assert torch.equal(started["w"], saved["conv1.weight"])  # training started from the file's encoder
    config = json.loads((tmp_path / "runs" / "dice" / "config.json").read_text())
    assert config["normalization"] == "imagenet"  # implied
    assert config["run"]["encoder_weights_sha256"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    expected = engine.build_model(engine.TrainConfig(normalization="imagenet"))
    expected.encoder.load_state_dict({k: v for k, v in saved.items() if not k.startswith("fc.")})
    assert config["run"]["init_sha256"] == state_sha256(expected)
    args = parse_args(["--encoder-weights", str(weights_file), "--normalization", "none"])
    assert configs_from_args(args)[0].normalization == "none"  # given explicitly: kept


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda s: s.pop("layer4.2.bn3.running_var"), "1 missing (layer4.2.bn3.running_var)"),
        (  # three: all named
            lambda s: [s.pop(f"layer4.2.bn3.{k}") for k in ("weight", "bias", "running_mean")],
            "3 missing (layer4.2.bn3.weight, layer4.2.bn3.bias, layer4.2.bn3.running_mean):",
        ),
        (  # more than three: the first three named, then ", ..." (errors.listed)
            lambda s: [s.pop(f"layer4.2.bn3.{k}") for k in ("weight", "bias", "running_mean", "running_var")],
            "4 missing (layer4.2.bn3.weight, layer4.2.bn3.bias, layer4.2.bn3.running_mean, ...)",
        ),
        (
            lambda s: s.update({"layer5.0.conv1.weight": torch.zeros(1)}),
            "1 unexpected (layer5.0.conv1.weight)",
        ),
        (
            lambda s: s.update({"conv1.weight": torch.zeros(64, 1, 7, 7)}),
            "conv1.weight (64, 1, 7, 7) vs (64, 3, 7, 7)",
        ),
    ],
    ids=["missing", "three-missing", "four-missing", "unexpected", "shape"],
)
def test_encoder_weights_that_do_not_fit_are_listed(
    tmp_path: Path,
    synthetic_root: Path,
    edit,
    expected: str,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    weights_file = torchvision_file(tmp_path / "bad.pth", edit)
    assert train(tmp_path, synthetic_root, "--encoder-weights", str(weights_file)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "dice").exists()


def test_a_checkpoint_of_this_project_is_not_encoder_weights(tmp_path: Path) -> None:
    """A train.py checkpoint (tensors beside a config, an epoch, a history) given as
    --encoder-weights: named as not a state_dict, not a list of 320 missing keys."""
    from unet_scratch.checkpoint import load_encoder_weights

    torch.save({"model": {"w": torch.zeros(1)}, "epoch": 3, "config": {"loss": "dice"}}, tmp_path / "best.pt")
    with pytest.raises(UserError, match=r"best\.pt is not a state_dict \(a dict of tensors\)"):
        load_encoder_weights(tmp_path / "best.pt")
    with pytest.raises(UserError, match=r"does not exist: .*download\.pytorch\.org/models/resnet50"):
        load_encoder_weights(tmp_path / "resnet50.pth")


def test_pickled_encoder_weights_are_refused(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save({"conv1.weight": Payload()}, tmp_path / "evil.pth")
    assert train(tmp_path, synthetic_root, "--encoder-weights", str(tmp_path / "evil.pth")) == 2
    err = capsys.readouterr().err
    assert "cannot be loaded safely" in err and "this would have run" not in err


class Payload:
    def __reduce__(self):  # noqa: ANN204
        return (print, ("this would have run",))


def start_weights(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, torch.Tensor]]:
    """Record the weights each run's first epoch starts from, keyed by run name: the live model's
    and (key ``NAME/ema``) the weight average's, before any step."""
    started: dict[str, dict[str, torch.Tensor]] = {}
    real = engine.train_one_epoch

    def record(model: torch.nn.Module, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        config, epoch, ema = args[4], args[5], args[10]
        if epoch == 1:
            started[config.name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            started[f"{config.name}/ema"] = {k: v.clone() for k, v in ema.module.state_dict().items()}
        return real(model, *args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", record)
    return started


def test_init_from_fine_tunes_a_trained_run(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_flags = ["--epochs", "1", "--normalization", "image", "--keep", "all"]  # its last.pt is a source
    assert train(tmp_path, synthetic_root, *base_flags, "--name", "base") == 0
    base = tmp_path / "runs" / "base"
    trained = weights(base / "best.pt")
    average = torch.load(base / "last.pt", weights_only=True)["ema"]  # one epoch: the last is the best
    assert all(torch.equal(average[k], trained[k]) for k in trained)
    started = start_weights(monkeypatch)
    # a run folder (its best.pt) for all four losses, best.pt itself, and last.pt (its average),
    # with another seed than the base run's
    cases = [("all", base, ["ft-dice", "ft-jaccard", "ft-focal", "ft-combined"]),
             ("jaccard", base / "best.pt", ["file"]), ("focal", base / "last.pt", ["last"])]  # fmt: skip
    for loss, source, names in cases:
        name = "ft" if loss == "all" else names[0]
        flags = ["--epochs", "1", "--loss", loss, "--seed", "5", "--name", name, "--init-from", str(source)]
        assert train(tmp_path, synthetic_root, *flags) == 0
        for run in names:
            for key in (run, f"{run}/ema"):  # the live weights and their average
                assert started[key].keys() == trained.keys()
                assert all(torch.equal(started[key][k], trained[k]) for k in trained), key
            config = json.loads((tmp_path / "runs" / run / "config.json").read_text())
            assert config["init_from"] == str(source)
            assert config["normalization"] == "image"  # the base run's input scaling, not the default
            read = source if source.is_file() else base / "best.pt"
            assert config["run"]["init_from_sha256"] == hashlib.sha256(read.read_bytes()).hexdigest()
    fresh = start_weights(monkeypatch)
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--seed", "5", "--name", "scratch") == 0
    assert not torch.equal(fresh["scratch"]["head.weight"], trained["head.weight"])  # the contrast
    preset = configs_from_args(parse_args(["--preset", "reference", "--init-from", str(base)]))
    assert preset[0].normalization == "image"  # a preset's normalisation does not override the run's


def test_init_from_resumes_from_its_own_checkpoint(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--name", "base") == 0
    flags = ["--epochs", "2", "--init-from", str(tmp_path / "runs" / "base"), "--keep", "all"]
    assert train(tmp_path, synthetic_root, *flags, "--name", "straight") == 0
    real = engine.train_one_epoch

    def interrupt_epoch_2(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if args[6] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", interrupt_epoch_2)
    assert train(tmp_path, synthetic_root, *flags, "--name", "resumed") == 130
    monkeypatch.setattr(engine, "train_one_epoch", real)
    (tmp_path / "runs" / "base").rename(tmp_path / "moved")  # resuming needs the run's own last.pt only
    assert train(tmp_path, synthetic_root, *flags, "--name", "resumed", "--resume") == 0
    a, b = (weights(tmp_path / f"runs/{n}/last.pt") for n in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # epoch 2 went on from epoch 1, not from the base run


def test_init_from_never_overwrites_its_source(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--keep", "best") == 0  # runs/dice
    source = tmp_path / "runs" / "dice"
    before = (source / "best.pt").read_bytes()
    for given in (source, source / "best.pt"):
        capsys.readouterr()
        assert train(tmp_path, synthetic_root, "--epochs", "1", "--init-from", str(given), "--overwrite") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another --name" in err, err
        assert (source / "best.pt").read_bytes() == before


@pytest.mark.parametrize(
    "setup, flags, expected",
    [
        ("", ["--init-from", "{tmp}/nowhere"], "nowhere does not exist"),
        ("empty", ["--init-from", "{tmp}/empty"], "has no best.pt"),
        ("base", ["--init-from", "{tmp}/runs/base", "--deep-supervision"], "6 missing (aux_heads.0.weight"),
        ("base", ["--init-from", "{tmp}/runs/base", "--normalization", "imagenet"],
         "was trained with --normalization none"),
        ("base", ["--init-from", "{tmp}/runs/base", "--encoder-weights", "{tmp}/x.pth"], "give one"),
        ("notckpt", ["--init-from", "{tmp}/w.pt"], "not a unet-scratch checkpoint"),
    ],
    ids=["missing", "no-best", "architecture", "normalization", "both", "not-a-run"],
)  # fmt: skip
def test_init_from_that_cannot_be_used_is_one_line(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str], setup: str, flags: list[str],
    expected: str,
) -> None:  # fmt: skip
    if setup == "base":
        assert train(tmp_path, synthetic_root, "--epochs", "1", "--name", "base", "--keep", "best") == 0
    elif setup == "empty":
        (tmp_path / "empty").mkdir()
    elif setup == "notckpt":
        torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "w.pt")
    capsys.readouterr()
    assert train(tmp_path, synthetic_root, *(f.format(tmp=tmp_path) for f in flags), "--name", "ft") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "runs" / "ft").exists()  # refused before any folder was made


def test_the_smallest_batch_check_follows_the_loops_batches() -> None:
    """At 32x32 a batch that gives a process one frame is refused before any data is read; the
    loop drops a last batch of one (5 frames in batches of 2: 2, 2), and at 64x64 (a 2x2 map at
    the bottom) one frame is enough."""
    from unet_scratch.train import check_smallest_batch

    at32 = TrainConfig(input_size=32, batch_size=2)
    check_smallest_batch(at32, 5, world=1)  # 2, 2 (the last 1 dropped)
    check_smallest_batch(TrainConfig(input_size=64, batch_size=1), 5, world=1)
    check_smallest_batch(TrainConfig(input_size=32, batch_size=4), 8, world=2)  # 4, 4: 2 + 2 each
    by3 = TrainConfig(input_size=32, batch_size=3)  # 7 frames: 3, 3 (1 dropped); over 2 processes 2 + 1
    by4 = TrainConfig(input_size=32, batch_size=4)  # 6 frames: 4, 2; over 2 processes the 2 gives 1 each
    for config, frames, world in ((at32, 1, 1), (at32, 6, 2), (by3, 7, 2), (by4, 6, 2)):
        with pytest.raises(UserError, match="a batch would hold one frame"):
            check_smallest_batch(config, frames, world)


def test_a_run_shorter_than_its_weight_average_says_so(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """6 frames in batches of 2: 3 steps an epoch. A weight average of decay d holds mostly the
    last 1 / (1 - d) steps; a run of fewer than twice that many is told that best.pt holds early
    weights too (a 1-epoch quick start scored 0.12 with it and 0.44 with --ema 0)."""
    note = "note: the weight average (--ema 0.5, saved as best.pt) spans about the last 2 steps"
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--ema", "0.5", "--name", "a") == 0
    assert f"{note}, and this run takes 3: it holds weights" in capsys.readouterr().out
    for flags in (["--epochs", "2", "--ema", "0.5"], ["--epochs", "1", "--ema", "0"]):  # 6 steps; none
        assert train(tmp_path, synthetic_root, *flags, "--name", "b", "--overwrite") == 0
        assert "note: the weight average" not in capsys.readouterr().out
    # a warm-up longer than the run: said too (a warm-up as long as the run reaches --lr at its end)
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--warmup-epochs", "2", "--name", "c") == 0
    assert "note: --warmup-epochs 2 is longer than the run (1 epoch): the learning rate never reaches " \
        "--lr 0.001\n" in capsys.readouterr().out
    assert train(tmp_path, synthetic_root, "--epochs", "1", "--warmup-epochs", "1", "--name", "d") == 0
    assert "--warmup-epochs" not in capsys.readouterr().out
