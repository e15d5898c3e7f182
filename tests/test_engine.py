"""The loop's parts one by one: settings reaching the model, loss and optimiser, the weight
average, batches, test-time augmentation, and the run folder's bookkeeping with scripted scores."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from unet_scratch import runfolder
from unet_scratch.config import TrainConfig
from unet_scratch.distributed import DistContext
from unet_scratch.engine import (
    EpochResult,
    ModelEMA,
    batch_indices,
    build_model,
    build_optimizer,
    epoch_generator,
    loss_for,
    predict,
    train_one_epoch,
    train_step,
)
from unet_scratch.losses import DeepSupervisionLoss, DiceLoss, LovaszHingeLoss
from unet_scratch.runfolder import RunFolder, state_sha256

CPU = torch.device("cpu")


def test_settings_reach_model_loss_and_optimiser() -> None:
    model = build_model(TrainConfig(drop_path=0.3, head_dropout=0.2, skips="none"))
    assert model.encoder.layer4[2].drop_prob == pytest.approx(0.3) and model.dropout.p == 0.2
    assert model.decoder.blocks[0].conv1[0].in_channels == 2048  # no skip
    assert isinstance(loss_for(TrainConfig(deep_supervision=True)), DeepSupervisionLoss)
    assert isinstance(loss_for(TrainConfig(loss="dice")), DiceLoss)
    for name, cls in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        beta2 = 0.999 if name == "sgd" else 0.95
        config = TrainConfig(optimizer=name, lr=3e-3, weight_decay=0.05, adam_beta2=beta2)
        opt = build_optimizer(torch.nn.Linear(2, 2), config, CPU)
        assert type(opt) is cls and opt.param_groups[0]["lr"] == 3e-3
        assert opt.param_groups[0]["weight_decay"] == 0.05
        if name == "sgd":
            assert opt.param_groups[0]["momentum"] == 0.9  # README: sgd (momentum 0.9)
        else:
            assert opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_loss_settings_reach_every_term() -> None:
    # values unlike every default, so a setting dropped on the way shows as the default
    settings = dict(smooth=0.25, loss_reduction="batch", focal_gamma=3.0, jaccard_log=True)
    combined = loss_for(TrainConfig(loss="combined", combined_focal_alpha=0.35, **settings))
    assert (combined.dice.smooth, combined.jaccard.smooth) == (0.25, 0.25) and combined.jaccard.log
    assert {combined.dice.reduction, combined.jaccard.reduction, combined.focal.reduction} == {"batch"}
    assert (combined.focal.alpha, combined.focal.gamma) == (0.35, 3.0)
    focal = loss_for(TrainConfig(loss="focal", focal_alpha=0.6, **settings))
    assert (focal.alpha, focal.gamma, focal.reduction) == (0.6, 3.0, "batch")
    jaccard = loss_for(TrainConfig(loss="jaccard", **settings))
    assert (jaccard.smooth, jaccard.reduction, jaccard.log) == (0.25, "batch", True)
    dice = loss_for(TrainConfig(loss="dice", **settings))
    assert (dice.smooth, dice.reduction) == (0.25, "batch")
    assert loss_for(TrainConfig(loss="dice", deep_supervision=True, **settings)).loss.smooth == 0.25
    # the Lovász hinge's own default reduction is "batch": "image" shows it was passed on
    other_forms = dict(loss_reduction="image", jaccard_lovasz=True, focal_normalize="positives")
    combined = loss_for(TrainConfig(loss="combined", **other_forms))
    assert (combined.jaccard.reduction, combined.focal.normalize) == ("image", "positives")
    assert isinstance(combined.jaccard, LovaszHingeLoss)
    assert loss_for(TrainConfig(loss="jaccard", **other_forms)).reduction == "image"
    assert isinstance(loss_for(TrainConfig(loss="jaccard", **other_forms)), LovaszHingeLoss)
    assert loss_for(TrainConfig(loss="focal", **other_forms)).normalize == "positives"


def test_ema_averages_weights_and_copies_batchnorm_statistics() -> None:
    """The average of the weights after each update, weighted (1 - d) d^(n - k) and renormalised:
    after weights w1, w2, w3 it is (d² w1 + d w2 + w3) / (d² + d + 1); the initial weights, which
    no step produced, count for nothing (a plain average started from them keeps d^n of them)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    ema = ModelEMA(model, decay=0.75)
    start = model[0].weight.detach().clone()
    model.train()(torch.randn(4, 1, 3, 3) * 5 + 2)  # moves the running statistics
    seen = []
    for step in (1.0, 2.0, 4.0):
        with torch.no_grad():
            model[0].weight.copy_(start + step)
        ema.update()
        seen.append(start + step)
        weights = [0.75 ** (len(seen) - 1 - k) for k in range(len(seen))]
        expected = sum(w * s for w, s in zip(weights, seen)) / sum(weights)
        torch.testing.assert_close(ema.module[0].weight, expected)
    assert ema.updates == 3
    assert not ema.module[0].weight.requires_grad  # the average is not trained
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)  # copied, not averaged
    assert torch.equal(ema.module[1].num_batches_tracked, model[1].num_batches_tracked)


def test_the_weight_average_follows_each_step_of_the_loop() -> None:
    """Inside the loop the average is updated after the step, so after two steps it holds
    ``(d * w1 + w2) / (d + 1)``, w1 and w2 the stepped weights (updated before each step it would
    hold w0 and w1, the whole run one step behind)."""
    model = torch.nn.Conv2d(3, 1, 3, padding=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    config = TrainConfig(schedule="constant", warmup_epochs=0, batch_size=4, augment="none", epochs=1)
    ema = ModelEMA(model, decay=0.75)
    w0 = model.weight.detach().clone()
    images = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    masks = torch.randint(0, 2, (4, 1, 8, 8), dtype=torch.uint8)
    stepped = []
    for epoch in (1, 2):  # one step each: a batch of all 4 images
        train_one_epoch(model, images, masks, DiceLoss(), opt, config, epoch, None, progress=False, ema=ema)
        stepped.append(model.weight.detach().clone())
    w1, w2 = stepped
    assert not torch.allclose(w1, w0) and not torch.allclose(w2, w1)  # each step moved the weights
    torch.testing.assert_close(ema.module.weight, (0.75 * w1 + w2) / 1.75)


def test_the_loop_takes_each_step_from_its_own_gradient_on_unit_range_inputs_in_training_mode() -> None:
    """Two plain SGD steps through train_one_epoch equal two steps by hand: each batch's uint8
    images divided by 255, the Dice loss's gradient of that batch alone (not summed with the step
    before), in training mode although validation left the model in eval mode."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, 2, (4, 1, 8, 8), dtype=torch.uint8, generator=g)
    config = TrainConfig(schedule="constant", warmup_epochs=0, batch_size=2, augment="none", epochs=1)
    model = torch.nn.Conv2d(3, 1, 3, padding=1).eval()  # as validation leaves it
    modes: list[bool] = []
    model.register_forward_hook(lambda m, _i, _o: modes.append(m.training))
    w, b = (p.detach().clone() for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_one_epoch(model, images, masks, DiceLoss(), optimizer, config, 1, None, progress=False)
    batches = batch_indices(4, 2, epoch_generator(config.seed, 1, CPU))
    for idx in batches:
        w, b = w.requires_grad_(), b.requires_grad_()
        x, y = images[idx].double() / 255, masks[idx].double()
        loss = DiceLoss()(torch.nn.functional.conv2d(x, w.double(), b.double(), padding=1), y)
        gw, gb = torch.autograd.grad(loss, (w, b))
        w, b = (w - 0.5 * gw).detach(), (b - 0.5 * gb).detach()
    assert modes == [True] * len(batches) == [True, True]
    torch.testing.assert_close(model.weight.detach(), w, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.bias.detach(), b, rtol=1e-4, atol=1e-5)


def test_each_epoch_draws_its_own_batches_from_the_seed() -> None:
    """The batch order (and the augmentations, drawn from the same stream) is a function of
    (seed, epoch): the same again for a resumed epoch, another for the next epoch or seed."""

    def order(seed: int, epoch: int) -> list[int]:
        return torch.cat(batch_indices(64, 8, epoch_generator(seed, epoch, CPU))).tolist()

    assert order(47, 3) == order(47, 3)
    assert len({tuple(order(47, e)) for e in range(1, 6)} | {tuple(order(48, 3))}) == 6


def test_a_step_hands_back_its_loss_without_the_graph() -> None:
    """The loop keeps every step's loss until the epoch ends: with its graph attached, each
    step's activations would be kept alive with it."""
    model = torch.nn.Conv2d(3, 1, 3, padding=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(2, 3, 8, 8), torch.randint(0, 2, (2, 1, 8, 8)).float()
    loss = train_step(model, x, y, DiceLoss(), opt, None)
    assert not loss.requires_grad and loss.grad_fn is None and loss.shape == ()


def test_batches_cover_everything_once_and_drop_a_lone_last_sample() -> None:
    g = torch.Generator().manual_seed(0)
    batches = batch_indices(7, 2, g)
    assert [len(b) for b in batches] == [2, 2, 2]  # the 7th sample alone would break BatchNorm
    assert len(set(torch.cat(batches).tolist())) == 6
    assert sorted(torch.cat(batch_indices(8, 3, g)).tolist()) == list(range(8))  # 3, 3, 2: all kept


def test_constant_schedule_still_warms_up() -> None:
    model = torch.nn.Conv2d(3, 1, 3, padding=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    config = TrainConfig(schedule="constant", warmup_epochs=1, lr=0.1, batch_size=2, augment="none", epochs=2)
    lrs = []
    opt.step = lambda *a, **k: lrs.append(opt.param_groups[0]["lr"])  # record, do not step
    images = torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8)
    masks = torch.randint(0, 2, (6, 1, 8, 8), dtype=torch.uint8)
    for epoch in (1, 2):
        train_one_epoch(model, images, masks, DiceLoss(), opt, config, epoch, None, progress=False)
    assert lrs == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.1, 0.1])  # 3 warm-up steps, then flat


class LeftHeavy(torch.nn.Module):
    """Not flip-symmetric: the logit is the input's red channel times a ramp from left to right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-3, 3, x.shape[-1]).view(1, 1, 1, -1)
        return x[:, :1] * ramp


def test_tta_averages_the_four_flips_flipped_back() -> None:
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    model = LeftHeavy()
    x = images.float() / 255
    expected = (
        sum(
            torch.sigmoid(model(x.flip(d) if d else x)).flip(d) if d else torch.sigmoid(model(x))
            for d in [(), (-1,), (-2,), (-1, -2)]
        )
        / 4
    )
    torch.testing.assert_close(predict(model, images, None, tta=True), expected)
    assert not torch.allclose(predict(model, images, None), expected)  # TTA changes this model's output


def test_predict_scores_every_image_across_batches() -> None:
    # 7 images in batches of 3 (3, 3, 1): each row is that image's own sigmoid(logits)
    images = torch.randint(
        0, 256, (7, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    model = LeftHeavy()
    expected = torch.sigmoid(model(images.double() / 255)).float()
    got = predict(model, images, None, batch_size=3)
    assert got.shape == (7, 1, 8, 8) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


def test_fingerprint_depends_on_the_weights() -> None:
    assert state_sha256(build_model(TrainConfig(seed=1))) != state_sha256(build_model(TrainConfig(seed=2)))
    assert state_sha256(build_model(TrainConfig(seed=1))) == state_sha256(build_model(TrainConfig(seed=1)))


def test_run_folder_keeps_the_best_validation_iou(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted scores: IoU 0.5, 0.4, 0.6, 0.6 (Dice in the opposite order) -> best epochs 1, 1, 3, 3:
    a tie keeps the earlier epoch; best.pt is written on every improvement whatever
    --checkpoint-every says."""
    written = []
    monkeypatch.setattr(
        runfolder, "atomic_torch_save", lambda state, path: written.append((path.name, state["epoch"]))
    )
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = RunFolder(tmp_path, TrainConfig(epochs=4, checkpoint_every=4), DistContext(), log=lambda _: None)
    run.start(model, {})
    result = EpochResult(loss=0.5, steps=1, images=2, seconds=1.0)
    bests = []
    for epoch, (iou, dice) in enumerate([(0.5, 0.3), (0.4, 0.9), (0.6, 0.2), (0.6, 0.8)], start=1):
        scores = {"iou": iou, "dice": dice, "soft_dice": dice / 2, "pooled_dice": iou / 4}
        run.end_epoch(epoch, result, scores, 2.0, model, opt, None, None)
        bests.append(run.best["epoch"])
    assert bests == [1, 1, 3, 3]
    assert run.best == {"epoch": 3, "val_iou": 0.6, "val_dice": 0.2}
    assert written == [("best.pt", 1), ("best.pt", 3), ("last.pt", 4)]
    assert [row["elapsed_seconds"] for row in run.history] == [2.0, 4.0, 6.0, 8.0]
    # metrics.csv: each score in its own column
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    columns = ("val_iou", "val_dice", "val_soft_dice", "val_pooled_dice", "train_loss", "images_per_s")
    got = [float(r[c]) for r in rows for c in columns]
    ious, dices = (0.5, 0.4, 0.6, 0.6), (0.3, 0.9, 0.2, 0.8)
    assert got == pytest.approx([v for i, d in zip(ious, dices) for v in (i, d, d / 2, i / 4, 0.5, 2.0)])


def test_resumed_run_keeps_counting_its_training_time(tmp_path: Path) -> None:
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    config = TrainConfig(epochs=3)
    run = RunFolder(tmp_path, config, DistContext(), log=lambda _: None)
    run.start(model, {})
    run.end_epoch(1, EpochResult(0.5, 1, 2, 1.0), {}, 5.0, model, opt, None, None)
    again = RunFolder(tmp_path, config, DistContext(), log=lambda _: None)
    assert again.resume(model, opt, None, None) == 2
    again.end_epoch(2, EpochResult(0.5, 1, 2, 1.0), {}, 3.0, model, opt, None, None)
    assert again.history[-1]["elapsed_seconds"] == 8.0 and not math.isnan(again.history[-1]["train_loss"])


def test_a_resume_restores_the_gradient_scaler(tmp_path: Path) -> None:
    """fp16 training (CUDA) keeps a loss scale that grows and backs off as it trains; a resumed
    run must go on from it, not from the initial 65536 (overflowing steps skipped again)."""
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    config = TrainConfig(epochs=3)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # the same state a CUDA scaler keeps
    scaler.scale(torch.tensor(1.0))  # the scale exists once a loss was scaled
    scaler.update(new_scale=8.0)
    run = RunFolder(tmp_path, config, DistContext(), log=lambda _: None)
    run.start(model, {})
    run.end_epoch(1, EpochResult(0.5, 1, 2, 1.0), {}, 1.0, model, opt, scaler, None)
    fresh = torch.amp.GradScaler("cpu")
    assert RunFolder(tmp_path, config, DistContext(), log=lambda _: None).resume(model, opt, fresh, None) == 2
    assert fresh.get_scale() == 8.0
