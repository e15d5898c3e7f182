"""Data-parallel training under ``torchrun`` (PyTorch's own launcher and rendezvous).

    torchrun --nproc_per_node=2 train.py --loss dice ...              # one machine
    torchrun --nnodes=2 --node_rank=0 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 --nproc_per_node=4 train.py ... # several machines

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them (plain ``python
train.py``) everything here is a no-op and the single-process path runs unchanged.

The choices, and why:

- **Global batch.** ``--batch-size`` is the global batch: every rank draws the same shuffled
  order from the shared ``(seed, epoch)`` generator and takes its slice of each global batch
  (``tensor_split``). So the sequence of global batches is the same for any number of ranks and
  a run's hyper-parameters keep their meaning when it is scaled out.
- **Data.** Each rank keeps the decoded frames on its own device (uint8, ~30 MB for 612 frames
  at 128x128; ~600 MB for Kvasir-SEG + CVC-ClinicDB at 352x352) and indexes its slice there.
- **Gradients** are averaged by DistributedDataParallel. **BatchNorm** normalises over each
  rank's slice unless ``--sync-bn`` (torch's SyncBatchNorm, which runs on GPUs only).
- **Validation** frames are split across ranks and the per-image scores gathered, so every
  rank computes the same means and agrees on the best epoch.
- Only rank 0 writes checkpoints, ``metrics.csv`` and progress.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .errors import UserError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world`` processes (1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_flag: str) -> DistContext:
    """Join the process group torchrun describes in the environment (nccl on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and not device_flag.startswith(("cpu", "mps"))
    if use_cuda:
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return ctx


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """Each rank drives its own GPU (``cuda:LOCAL_RANK``); CPU ranks share the CPU."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap_model(
    ctx: DistContext, model: torch.nn.Module, sync_bn: bool, device: torch.device
) -> torch.nn.Module:
    """The module the loop calls: ``model`` itself, or under torchrun a DistributedDataParallel
    around it (gradients averaged over ranks during backward), optionally with SyncBatchNorm.
    ``model`` stays the bare module whose state_dict is saved."""
    if not ctx.enabled:
        return model
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def check_batch(ctx: DistContext, batch_size: int) -> None:
    if batch_size < ctx.world:
        raise UserError(
            f"--batch-size {batch_size} is the global batch and must be at least the number of "
            f"processes ({ctx.world})"
        )


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writing a cache), the others after it."""
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)


def mean_across(ctx: DistContext, t: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``t`` over ranks (``t`` itself in a single process)."""
    if not ctx.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / ctx.world


def broadcast_buffers(ctx: DistContext, model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if ctx.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def gather_objects(ctx: DistContext, obj: object) -> list[object]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[object] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
