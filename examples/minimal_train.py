"""The whole idea on one page: a ResNet50-UNet learns to outline polyps.

    python examples/minimal_train.py            # about 2 minutes on a 2-core CPU
    python examples/minimal_train.py --steps 400 --size 128

The model, one loss (Dice), random flips and a plain training loop on synthetic frames the
project generates; no engine, no checkpoints, no schedule. train.py adds the rest (augmentations,
a weight average, mixed precision, resumable run folders): see unet_scratch/engine.py.
"""

import argparse
import tempfile

import torch

from unet_scratch import DiceLoss, UNetResNet50, load_frames
from unet_scratch.metrics import dice_score
from unet_scratch.synthetic import write_dataset


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps of 8 frames")
    parser.add_argument("--size", type=int, default=64, help="frames are resized to SIZE x SIZE")
    parser.add_argument("--frames", type=int, default=120, help="synthetic frames: 5/6 train, 1/6 test")
    args = parser.parse_args(argv)
    if args.size < 32 or args.size % 32:  # the encoder halves the frame five times, the decoder back
        parser.error("--size must be a positive multiple of 32, e.g. 64 or 128")
    torch.manual_seed(47)

    with tempfile.TemporaryDirectory() as tmp:  # frames in the CVC-ClinicDB layout, then tensors
        root = write_dataset(tmp, range(1, args.frames + 1))
        images, masks = load_frames(root, list(range(1, args.frames + 1)), args.size)  # uint8
    n_train = args.frames * 5 // 6
    train_x, train_y, test_x, test_y = images[:n_train], masks[:n_train], images[n_train:], masks[n_train:]

    model = UNetResNet50()  # random (kaiming) initialisation; outputs one logit per pixel
    loss_fn = DiceLoss(reduction="image")  # 1 - Dice of sigmoid(logits), per image
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    model.train()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, n_train, (8,))
        x = train_x[idx].float() / 255  # (8, 3, S, S) in [0, 1]
        y = train_y[idx].float()  # (8, 1, S, S) in {0, 1}
        flip = torch.rand(8, 1, 1, 1) < 0.5  # left-right flips, image and mask together
        x, y = torch.where(flip, x.flip(-1), x), torch.where(flip, y.flip(-1), y)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()  # gradients of the loss for all 32.5 M weights
        optimizer.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step:>4}: Dice loss {loss.item():.3f}")

    model.eval()  # BatchNorm now uses its running statistics
    with torch.no_grad():
        prob = torch.sigmoid(model(test_x.float() / 255))
    dice = dice_score(prob, test_y.float()).mean().item()  # per-image Dice at p > 0.5
    print(f"mean Dice on {len(test_x)} frames it never saw: {dice:.3f}")
    return dice


if __name__ == "__main__":
    main()
