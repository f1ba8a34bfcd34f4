"""Gradient accumulation: how one optimizer step's global batch splits into micro-batches.

A global batch of train.batch_size samples is shared by the processes (`distributed.shard`), and
each process's share is cut into `accumulation` micro-batches of at most train.micro_batch_size
samples, one forward/backward each; their gradients add up to the whole batch's (the loss is scaled
by the global batch's weight, not the micro-batch's), so the optimizer step is the same as if the
batch had fit at once. Only the float summation order differs.
"""

from __future__ import annotations

from trainer.distributed import shard
from trainer.errors import UserError


def accumulation_steps(batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro-batches per optimizer step on each process: batch_size / (micro_batch_size × processes),
    which must be a whole number (else an accumulated step would not be the batch the user asked
    for). A micro-batch of at least the process's whole share is one micro-batch, no accumulation."""
    per_process = process_share(batch_size, world_size)  # a batch smaller than the world: 0 or 1
    if micro_batch_size >= per_process:
        return 1
    per_micro_step = micro_batch_size * world_size
    if batch_size % per_micro_step:
        under = f" × {world_size} processes" if world_size > 1 else ""
        raise UserError(
            f"train.batch_size = {batch_size} is not a multiple of train.micro_batch_size = "
            f"{micro_batch_size}{under}; choose a batch_size that is, or a micro_batch_size that "
            "divides it"
        )
    return batch_size // per_micro_step


def process_share(batch_size: int, world_size: int) -> int:
    """The most samples of a global batch one process computes (`distributed.shard`'s largest)."""
    return -(-batch_size // world_size)


def micro_batch_sizes(batch_size: int, world_size: int) -> list[int]:
    """The micro-batch sizes that make whole accumulation steps, ascending: a process's whole share
    (no accumulation), and each divisor d of it for which batch_size is a multiple of d × processes."""
    share = process_share(batch_size, world_size)
    return [
        d
        for d in range(1, share + 1)
        if share % d == 0 and (d == share or batch_size % (d * world_size) == 0)
    ]


def asked_micro_batch(setting: int | str, batch_size: int, world_size: int) -> int | str:
    """train.micro_batch_size as asked: "auto" (the memory plan picks), or an int checked against
    train.batch_size (a UserError naming both keys) and capped at a process's share."""
    if setting == "auto":
        return setting
    micro = min(int(setting), process_share(batch_size, world_size))
    accumulation_steps(batch_size, micro, world_size)
    return micro


def micro_batches(
    batch: list[int], rank: int, world_size: int, accumulation: int
) -> list[list[int]]:
    """This process's share of a global batch cut into `accumulation` contiguous micro-batches of
    near-equal size (an epoch's short last batch gives smaller ones; one can be empty, which the step
    still runs, with a zero-weight sample, so that every process does the same micro-steps)."""
    mine = shard(batch, rank, world_size)
    size, extra = divmod(len(mine), accumulation)
    out, start = [], 0
    for i in range(accumulation):
        end = start + size + (i < extra)
        out.append(mine[start:end])
        start = end
    return out
