"""Training on several processes: torch.distributed's DistributedDataParallel (DDP).

Started by torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK in each process:

    torchrun --nproc_per_node 2 -m models train --interactions PATH --protocol loo

`start_process_group` joins the group (gloo on CPU, NCCL on CUDA: each process takes the GPU
of its LOCAL_RANK). Every process then reads the same data and prepares the same start
(sequences, the EASE memory, validation users), so they agree without sending it. Training
is data parallel: each epoch's batches are drawn in the same order everywhere and each batch
is split by rank (`shard`); DDP averages the gradients after every backward pass, so the
weights stay identical on every process; and validation, which every process scores alike,
decides early stopping the same way everywhere. One process alone (no torchrun) trains as
before: every helper here is then the identity.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, number of processes) of the training group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    """Whether this process trains as one of several."""
    return world()[1] > 1


def start_process_group(timeout_s: float = 600.0) -> str:
    """Join the group torchrun described in the environment (gloo on CPU, NCCL when CUDA is
    present) and return the device this process trains on ("cpu" or "cuda:<LOCAL_RANK>").
    Without torchrun's environment: no group, device "auto"."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return "auto"
    cuda = torch.cuda.is_available()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        # On GPUs, NCCL for the gradients and gloo for the small CPU tensors of the
        # collective decisions (`any_process`), which NCCL cannot carry.
        dist.init_process_group(
            backend="cpu:gloo,cuda:nccl" if cuda else "gloo",
            timeout=timedelta(seconds=timeout_s),
        )
    return device


def stop_process_group() -> None:
    """Leave the group (after the last collective call), if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """This process's part of each of an epoch's `batches` (drawn in the same order by every
    process): every size-th user from its rank on. The global batch, the steps per epoch and
    the learning rate stay those of one process (DDP averages the parts' gradients), so more
    processes follow the same course, each step shared out. A batch with fewer users than
    processes is taken whole by each."""
    rank, size = world()
    if size == 1:
        return list(batches)
    return [users[rank::size] if len(users) >= size else users for users in batches]


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process (one collective call; every process must ask):
    a time budget spent on one process stops the epoch on all of them at the same step."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def target_share(weight: float) -> float:
    """What a process's step loss (a mean over its own `weight` of targets) is multiplied by
    before the backward pass, so that DDP's plain average of the gradients is the gradient
    of the mean over every target of the step, as one process computes it: its share of the
    step's targets times the number of processes (1.0 for one process; one collective call,
    every process must ask)."""
    if not is_distributed():
        return 1.0
    total = torch.tensor([weight], dtype=torch.float64)
    dist.all_reduce(total)  # every process's targets of this step
    return weight * dist.get_world_size() / max(float(total.item()), 1e-12)


class _TrainingStep(nn.Module):
    """The trained modules under one parent, so DDP sees every parameter, with the loss
    function as the forward pass."""

    def __init__(self, modules: Sequence[nn.Module], loss: Callable) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.loss = loss

    def forward(self, users: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, float]:
        return self.loss(users, rng)


def data_parallel(
    loss: Callable[[np.ndarray, np.random.Generator], tuple[torch.Tensor, float]],
    modules: Sequence[nn.Module],
) -> Callable[[np.ndarray, np.random.Generator], tuple[torch.Tensor, float]]:
    """`loss` (a batch's users and a random generator in; the loss and its targets' weight
    out) computing through `modules`, wrapped in DDP when this process is one of several, so
    each backward pass averages the gradients over the processes; else `loss` itself.

    Parameters a step may leave unused (the memory's gate when it is shut) are allowed; the
    fixed buffers (EASE's factors) are the same everywhere and are not re-sent each step."""
    if not is_distributed():
        return loss
    step = _TrainingStep(modules, loss)
    device = next(step.parameters()).device
    return nn.parallel.DistributedDataParallel(
        step,
        device_ids=[device] if device.type == "cuda" else None,
        forward_sync_buffers=False,
        find_unused_parameters=True,
    )
