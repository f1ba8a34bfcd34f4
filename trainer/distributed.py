"""Data parallelism on torch.distributed, as torchrun launches it (RANK, WORLD_SIZE, LOCAL_RANK).

Every rank walks the same global batches in the same order; each takes a disjoint shard of every
global batch (`shard`), DDP averages gradients, and the losses are scaled so that the averaged
gradient equals the single-process gradient of the whole global batch. Metrics and the stop flag
travel in one all-reduce per step. Rank 0 alone writes the monitor files and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = (
    120  # a collective waiting longer than this on a dead or hung rank fails the run
)


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a small float tensor over ranks (identity on one process)."""
        if self.enabled:
            values = values.to(torch.float64)
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def all_sum_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """Sum an integer tensor over ranks in place, exactly (int64: no float rounding of counts,
        however many); identity on one process."""
        if self.enabled:
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return counts

    def gather_objects(self, obj: object) -> list[object]:
        if not self.enabled:
            return [obj]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's obj on every rank (--auto-resume's decision: start, resume or refuse)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait for every rank (at the normal end: no rank tears gloo down while a peer is still
        talking to it, which can abort the process with "terminate called without an active
        exception")."""
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(timeout_s: float = DEFAULT_TIMEOUT_S) -> Dist:
    """Join the process group torchrun set up, or a one-process Dist when not under torchrun.
    Joined already (--auto-resume agrees on what to do before training): that group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return Dist(rank=rank, world_size=world_size, local_rank=local_rank)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
        # torchrun's OMP_NUM_THREADS=1 default starves a CPU rank; oversubscribing the cores is worse.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank)


def shard(indices: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's part of a global batch: every world_size-th sample from position rank.

    A batch of B samples gives the first B % world_size ranks one sample more; a rank can get none
    (B < world_size), and then still takes part in the step with a zero-weight sample.
    """
    return indices[rank::world_size]
