"""The training levers: lr schedule, EMA, gradient clipping, presets, zero-init residual."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from unet_scratch.config import PRESETS, SAVED_BEFORE, TrainConfig
from unet_scratch.engine import build_model, loss_for, lr_factor, train_step
from unet_scratch.losses import DiceLoss
from unet_scratch.train import configs_from_args, main, parse_args


def test_lr_factor_warmup_then_cosine() -> None:
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)  # half-way down the cosine
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, 100, 0, "constant") == 1.0
    assert lr_factor(4, 100, 10, "constant") == pytest.approx(0.5)


def test_grad_clip_bounds_the_gradient_norm() -> None:
    model = build_model(TrainConfig(seed=0))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    train_step(model, x, y, DiceLoss(), opt, None, grad_clip=1e-3)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm.item() == pytest.approx(1e-3, rel=1e-3)


def test_zero_init_residual_option() -> None:
    model = build_model(TrainConfig(zero_init_residual=True))
    assert torch.all(model.encoder.layer2[1].bn3.weight == 0)


def test_preset_reference_and_explicit_flags() -> None:
    args = parse_args(["--preset", "reference", "--lr", "3e-4", "--loss", "all"])
    configs = configs_from_args(args)
    assert len(configs) == 4 and {c.lr for c in configs} == {3e-4}
    assert configs[0].optimizer == "adam" and configs[0].augment == "flips"
    for key, value in PRESETS["reference"].items():
        if key != "lr":
            assert getattr(configs[0], key) == value
    assert configs_from_args(parse_args(["--ema", "0.99"]))[0].ema == 0.99


def test_cosine_schedule_ema_and_augment_through_the_cli(tmp_path: Path, synthetic_root: Path) -> None:
    flags = ["--data", str(synthetic_root), "--out", str(tmp_path / "runs"), "--train-frames", "1-6",
             "--val-frames", "none", "--input-size", "64", "--batch-size", "2", "--epochs", "2",
             "--schedule", "cosine", "--warmup-epochs", "1", "--lr", "1e-3", "--optimizer", "adamw",
             "--augment", "flips,rot90,affine,color", "--ema", "0.9", "--grad-clip", "1.0",
             "--device", "cpu"]  # fmt: skip
    assert main(flags) == 0
    run = tmp_path / "runs" / "dice"
    with open(run / "metrics.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    # 3 steps an epoch, 3 warm-up steps: epoch 1 ends warm-up (factor 3/3), epoch 2 ends at
    # step 5 of 6, two thirds down the cosine: 0.5 * (1 + cos(2 pi / 3)) = 0.25
    assert lrs == pytest.approx([1e-3, 2.5e-4])
    last = torch.load(run / "last.pt", weights_only=True)
    best = torch.load(run / "best.pt", weights_only=True)
    assert set(last["ema"]) == set(last["model"])
    assert best["epoch"] == last["epoch"] == 2  # no validation: best.pt is the last epoch
    differ = [k for k in last["model"] if not torch.equal(last["ema"][k], last["model"][k])]
    assert len(differ) > 100  # the average is not the weights
    assert all(
        torch.equal(best["model"][k], last["ema"][k]) for k in last["ema"]
    )  # best.pt holds the average


def test_unknown_augment_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--augment", "flips,mixup", "--out", str(tmp_path)]) == 2
    assert "unknown augmentation 'mixup'" in capsys.readouterr().err


def test_preset_tuned_is_the_ablation_recipe() -> None:
    by_preset = configs_from_args(parse_args(["--preset", "tuned"]))[0]
    by_flags = configs_from_args(
        parse_args(
            [
                "--optimizer",
                "adamw",
                "--lr",
                "1e-3",
                "--weight-decay",
                "1e-4",
                "--schedule",
                "cosine",
                "--warmup-epochs",
                "1",
                "--augment",
                "flips,rot90,affine,color",
                "--ema",
                "0.99",
                "--loss-reduction",
                "image",
            ]
        )  # fmt: skip
    )[0]
    assert by_preset == by_flags
    assert TrainConfig(name=by_preset.name) == by_preset  # the defaults are the tuned recipe
    reference = configs_from_args(parse_args(["--preset", "reference"]))[0]
    assert (reference.train_frames, reference.val_frames) == ("1-363", "364-428")
    assert (TrainConfig().train_frames, TrainConfig().val_frames) == ("1-428", "none")


def test_old_configs_keep_their_normalization() -> None:
    # a config saved before --normalization existed was trained without it, whatever the default
    assert TrainConfig.from_dict({"loss": "dice"}).normalization == "none"
    assert TrainConfig.from_dict({"normalization": "image"}).normalization == "image"
    # a key a later version dropped (a removed flag) is passed over: the old run still loads
    assert TrainConfig.from_dict({"loss": "jaccard", "a_removed_flag": 1}).loss == "jaccard"
    assert configs_from_args(parse_args(["--normalization", "image"]))[0].normalization == "image"
    with pytest.raises(ValueError, match="--normalization"):
        TrainConfig(normalization="zscore").validate()


def test_old_configs_keep_their_loss_forms() -> None:
    # saved before --jaccard-lovasz and --focal-normalize existed: soft Jaccard, pixel-mean focal
    # pinned in SAVED_BEFORE, so that a later change of default cannot change an old run
    assert (SAVED_BEFORE["jaccard_lovasz"], SAVED_BEFORE["focal_normalize"]) == (False, "pixels")
    old = TrainConfig.from_dict({"loss": "combined"})
    assert (old.jaccard_lovasz, old.focal_normalize) == (False, "pixels")
    flags = ["--jaccard-lovasz", "--focal-normalize", "positives"]
    given = configs_from_args(parse_args(flags))[0]
    assert (given.jaccard_lovasz, given.focal_normalize) == (True, "positives")


def test_focal_alpha_per_loss() -> None:
    assert loss_for(TrainConfig(loss="focal")).alpha == 0.75
    assert loss_for(TrainConfig(loss="combined")).focal.alpha == 0.2
    flags = ["--focal-alpha", "0.6", "--combined-focal-alpha", "0.3", "--loss", "all"]
    by_loss = {c.loss: loss_for(c) for c in configs_from_args(parse_args(flags))}
    assert by_loss["focal"].alpha == 0.6 and by_loss["combined"].focal.alpha == 0.3
    reference = configs_from_args(parse_args(["--preset", "reference", "--loss", "combined"]))[0]
    assert loss_for(reference).focal.alpha == 0.2
    # a config saved before combined_focal_alpha existed used focal_alpha inside combined
    assert TrainConfig.from_dict({"loss": "combined", "focal_alpha": 0.4}).loss_focal_alpha == 0.4
    with pytest.raises(ValueError, match="--combined-focal-alpha must be in"):
        TrainConfig(combined_focal_alpha=1.5).validate()


@pytest.mark.parametrize(
    "setting, flag",
    [
        ({"input_size": 48}, "--input-size"),  # a multiple of 16 but not of 32
        ({"ema": 1.0}, "--ema"),
        ({"drop_path": 1.0}, "--drop-path"),
        ({"head_dropout": 1.0}, "--head-dropout"),
        ({"head_prior": 1.0}, "--head-prior"),
        ({"head_prior": -0.1}, "--head-prior"),
        ({"lr": 0.0}, "--lr"),
        ({"weight_decay": -1e-4}, "--weight-decay"),
        ({"adam_beta2": 1.0}, "--adam-beta2"),
        ({"optimizer": "sgd", "adam_beta2": 0.99}, "--adam-beta2"),
        ({"checkpoint_every": 0}, "--checkpoint-every"),
        ({"focal_alpha": -0.1}, "--focal-alpha"),
        ({"focal_alpha": 1.1}, "--focal-alpha"),  # both ends of each range
        ({"drop_path": -0.1}, "--drop-path"),
        ({"head_dropout": -0.1}, "--head-dropout"),
        ({"ema": -0.1}, "--ema"),
        # argparse's choices guard the command line; an edited config.json or the API meets these
        ({"amp": "fp8"}, "--amp must be one of"),
        ({"loss_reduction": "sum"}, "--loss-reduction"),
        ({"optimizer": "rmsprop"}, "--optimizer must be one of"),
        ({"loss": "bce"}, "--loss must be one of"),
        ({"smooth": -1.0}, "--smooth"),
        ({"warmup_epochs": -1.0}, "--warmup-epochs"),
        ({"grad_clip": -1.0}, "--grad-clip"),
        ({"keep": "none"}, "--keep"),
        ({"skips": "some"}, "--skips"),
        ({"schedule": "step"}, "--schedule"),
        ({"focal_normalize": "anchors"}, "--focal-normalize"),
        ({"jaccard_log": True, "jaccard_lovasz": True}, "--jaccard-lovasz"),
    ],
)
def test_out_of_range_settings_name_their_flag(setting: dict, flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        TrainConfig(**setting).validate()


def test_threads_are_bounded_by_the_cpus_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``taskset -c 0`` (or a container's CPU set) on a larger machine, --threads 2 is
    more threads than CPUs: refused, although the machine has them."""
    import os

    from unet_scratch import config

    monkeypatch.setattr(config.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    TrainConfig(threads=1).validate()
    with pytest.raises(ValueError, match="to the 1 CPUs this process may use, got 2"):
        TrainConfig(threads=2).validate()
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows: the machine's count
    TrainConfig(threads=8).validate()


def test_reference_preset_is_the_reports_recipe() -> None:
    # spelled out literally: the preset must not drift with PRESETS or the defaults
    c = configs_from_args(parse_args(["--preset", "reference"]))[0]
    assert (c.optimizer, c.lr, c.weight_decay, c.schedule, c.warmup_epochs) == (
        "adam",
        1e-4,
        0.0,
        "constant",
        0.0,
    )
    assert c.adam_beta2 == 0.999  # torch's default, which the report's Adam used
    given = configs_from_args(parse_args(["--preset", "reference", "--adam-beta2", "0.95"]))[0]
    assert (given.adam_beta2, given.optimizer) == (0.95, "adam")  # the flag given wins over the preset
    assert (c.augment, c.ema, c.loss_reduction, c.smooth) == ("flips", 0.0, "batch", 1.0)
    assert (c.focal_alpha, c.combined_focal_alpha, c.focal_gamma) == (0.2, 0.2, 2.0)
    assert (c.epochs, c.batch_size, c.input_size, c.seed) == (20, 8, 128, 47)
    assert (c.train_frames, c.val_frames, c.normalization, c.skips, c.drop_path) == (
        "1-363",
        "364-428",
        "none",
        "all",
        0.0,
    )


def test_loss_all_names_its_runs() -> None:
    names = [c.name for c in configs_from_args(parse_args(["--loss", "all", "--name", "x"]))]
    assert names == ["x-dice", "x-jaccard", "x-focal", "x-combined"]
    assert [c.name for c in configs_from_args(parse_args(["--loss", "all"]))] == [
        "dice",
        "jaccard",
        "focal",
        "combined",
    ]
