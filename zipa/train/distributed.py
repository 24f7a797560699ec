"""Distributed training on PyTorch's own stack: `torchrun` (any number of nodes) or
`--world-size N` (processes spawned on this machine). NCCL on CUDA, gloo on CPU."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# Set to a folder, this makes every rank save its final weights there as rank{r}.pt (tests use
# it to check that DDP kept the ranks' parameters identical).
DUMP_RANK_PARAMS_ENV = "ZIPA_DUMP_RANK_PARAMS"


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def run_distributed(main: Callable[[DistInfo], None], world_size: int, master_port: int = 12354) -> None:
    """Run `main(info)` once per rank: under torchrun in this process, with `world_size` > 1 in
    spawned local processes, else directly."""
    if launched_by_torchrun():
        info = DistInfo(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
        _run_rank(main, info)
    elif world_size > 1:
        os.environ.setdefault("MASTER_ADDR", "localhost")
        os.environ["MASTER_PORT"] = str(master_port)
        mp.spawn(_spawned, args=(main, world_size), nprocs=world_size, join=True)
    else:
        main(DistInfo())


def _spawned(rank: int, main: Callable[[DistInfo], None], world_size: int) -> None:
    # mp.spawn leaves "spawn" as this process's start method, so each DataLoader worker would
    # start a fresh interpreter and import torch and lhotse again, every epoch (a tiny model's
    # first step with 2 ranks x 2 loaders x 4 workers on 2 cores: 17.4 s that way, 4.7 s with
    # forked workers). A rank that torchrun starts forks its workers; this one does too.
    if "fork" in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("fork", force=True)
    _run_rank(main, DistInfo(rank, rank, world_size))


def _run_rank(main: Callable[[DistInfo], None], info: DistInfo) -> None:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    try:
        main(info)
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def sum_gradients(state, bucket):  # no annotations: DDP checks them, and this module's are strings
    """DDP communication hook: the ranks' gradients summed (DDP's own hook averages them).

    A batch's loss is summed over its utterances, so a step's gradient is then the gradient of
    the loss summed over the utterances of every rank's batch: the gradient one process computes
    on all of them, so N ranks train as one process given the N batches together (averaged,
    the gradient would be N times smaller, and ScaledAdam is invariant to that scale only up to
    its eps)."""
    work = dist.all_reduce(bucket.buffer(), op=dist.ReduceOp.SUM, async_op=True)
    return work.get_future().then(lambda done: done.value()[0])


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order; `[obj]` without a process group. All
    ranks must call it together."""
    if dist.is_available() and dist.is_initialized():
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered
    return [obj]


def dump_rank_params(model: torch.nn.Module, rank: int) -> None:
    """Save `model`'s state_dict to $ZIPA_DUMP_RANK_PARAMS/rank{rank}.pt when that variable is
    set (a test hook; nothing happens otherwise)."""
    folder = os.environ.get(DUMP_RANK_PARAMS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), Path(folder) / f"rank{rank}.pt")
