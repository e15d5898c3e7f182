"""Run train.py's main() in a subprocess with a test hook installed first.

    python tests/harness.py [--bn-free] [--die-in-write last.pt@2] -- TRAIN.PY ARGS...

Works as a plain script and under ``torchrun``. The hooks, for tests that need them:

- ``--bn-free``: every BatchNorm normalises with its running statistics, which stay at their
  initial (0, 1): an affine map per channel that does not depend on the batch. Then a rank that
  sees half of a global batch computes exactly the same per-sample function as one process
  seeing all of it, so torchrun can be checked for exact equality with a single process.
- ``--die-in-write NAME@EPOCH``: while the checkpoint ``NAME`` of epoch ``EPOCH`` is being
  written, half of its bytes are on disk when the process kills itself with SIGKILL: a crash in
  the middle of a checkpoint write, at a known moment.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet_scratch import checkpoint  # noqa: E402
from unet_scratch.errors import exit_with  # noqa: E402
from unet_scratch.train import main  # noqa: E402


def batchnorm_without_batch_statistics(self: torch.nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm2d.forward for ``--bn-free``: normalise with the running statistics, never update them."""
    return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def bn_free() -> None:
    torch.nn.BatchNorm2d.forward = batchnorm_without_batch_statistics


def die_in_write(name: str, epoch: int) -> None:
    real_save = torch.save

    def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        target = getattr(f, "name", "")
        if (
            isinstance(obj, dict)
            and obj.get("epoch") == epoch
            # the temporary file an atomic write uses, or the checkpoint itself: a writer that
            # skipped the temporary file would then leave a damaged NAME, which the test detects
            and (Path(str(target)).name == name or Path(str(target)).name.startswith(f".{name}."))
        ):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(obj, f, *args, **kwargs)

    checkpoint.torch.save = save  # the module-level name atomic_torch_save calls


if __name__ == "__main__":
    argv = sys.argv[1:]
    split = argv.index("--")
    hooks, train_args = argv[:split], argv[split + 1 :]
    if "--bn-free" in hooks:
        bn_free()
    if "--die-in-write" in hooks:
        name, epoch = hooks[hooks.index("--die-in-write") + 1].split("@")
        die_in_write(name, int(epoch))
    exit_with(main(train_args))
