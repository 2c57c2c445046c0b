"""Data parallelism over ``torch.distributed``: which process this is, and the few collectives seqkd needs.

``torchrun`` (or ``seqkd run --nproc N``, which starts it) launches one process per device and sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init` joins them into one process group (gloo
for CPU tensors, NCCL for CUDA tensors). Without ``WORLD_SIZE`` (or with 1) there is no process
group and every helper here is a no-op, so a single-process run does exactly what it did before.

The engine does not stand on fairseq2's trainer (docs/architecture.md says why), so there is no
fairseq2 gang to hand to it: seqkd calls ``torch.distributed`` directly. Gradients are summed with
one bucketed ``all_reduce`` per optimizer update, after the whole gradient-accumulation group,
rather than through ``DistributedDataParallel``, whose hooks need every forward pass to go through
its wrapper; methods reach into a student's submodules (hidden states, the CRF) and would bypass it.

Rank 0 alone writes files. Work that only rank 0 does goes through :func:`on_main`, which hands its
result, or its error, to every rank, so a failure there stops the other ranks with rank 0's message
instead of leaving them waiting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from seqkd.errors import SeqkdError

T = TypeVar("T")

# How long a rank waits in a collective for the others. Rank 0 alone trains a vocabulary or writes a
# model while the others wait, so this is generous; a rank that *fails* does not count on it: torchrun
# stops the others as soon as one process exits with an error.
TIMEOUT = timedelta(minutes=60)
BUCKET_ELEMENTS = 2**24  # gradients are summed in flat buckets of at most this many elements (64 MiB fp32)


class RankFailed(SeqkdError):
    """Raised on every other rank when work that rank 0 does alone has failed."""


def requested_world_size() -> int:
    """The number of processes the launcher started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> None:
    """Join the process group that torchrun set up; nothing without WORLD_SIZE (or with 1)."""
    if requested_world_size() <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)


def finish() -> None:
    """Leave the process group (at the end of a command), so the process exits cleanly."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def label() -> str:
    """' (rank r)' in a multi-process run, '' otherwise: for error messages."""
    return f" (rank {rank()})" if world_size() > 1 else ""


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_gather(obj: T) -> list[T]:
    """Every rank's ``obj`` (any picklable value), in rank order."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only; every rank returns its result, or raises if it failed.

    It is also a synchronisation point: no rank goes on before rank 0 has finished ``fn`` (e.g.
    before a file that rank 0 writes exists).
    """
    if world_size() == 1:
        return fn()
    outcome: list[Any] = [None]
    if is_main():
        try:
            outcome = [("ok", fn())]
        except BaseException as exc:
            dist.broadcast_object_list([("error", f"{type(exc).__name__}: {exc}")], src=0)
            raise
    dist.broadcast_object_list(outcome, src=0)
    status, value = outcome[0]
    if status == "error":
        raise RankFailed(f"rank 0 failed: {value}")
    return value


def main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0, then on the other ranks: for idempotent set-up that writes files once
    (a vocabulary) and then reads them everywhere."""
    result = on_main(fn)
    return result if is_main() else fn()


def sum_values(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums of ``values`` over all ranks (float64, so token counts stay exact)."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over all ranks, in place.

    A parameter no rank computed a gradient for keeps ``None`` (so the optimizer skips it, as it
    would in one process); one that only some ranks reached counts as zero on the others.
    """
    if world_size() == 1 or not params:
        return
    device = params[0].device
    present = torch.tensor([float(p.grad is not None) for p in params], device=device)
    dist.all_reduce(present)
    live = [p for p, n in zip(params, present.tolist()) if n > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets([p.grad for p in live]):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def _buckets(grads: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Consecutive gradients of one dtype, up to BUCKET_ELEMENTS elements per bucket."""
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads:
        if bucket and (size + g.numel() > BUCKET_ELEMENTS or g.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(g)
        size += g.numel()
    if bucket:
        yield bucket


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (seeded ranks agree already; this makes sure)."""
    if world_size() == 1:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


class RankShard:
    """This rank's share of a batch reader: every rank reads the same global stream of batches and
    keeps every W-th one, starting at its rank.

    So W processes, each accumulating ``a`` batches per update, see exactly the batches that one
    process accumulating ``W * a`` would, and the wrapped reader's state is the same on every rank
    after each update (each has read ``W * a`` batches): rank 0's checkpoint of it resumes them all.
    """

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def __iter__(self) -> Iterator[Any]:
        stream = iter(self.reader)
        mine, width = rank(), world_size()
        while True:
            group = [next(stream) for _ in range(width)]
            yield group[mine]

    def state_dict(self) -> dict[str, Any]:
        return self.reader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reader.load_state_dict(state)
