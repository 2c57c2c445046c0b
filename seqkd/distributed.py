"""Data parallelism over ``torch.distributed``: which process this is, and the few collectives seqkd needs.

``torchrun`` (or ``seqkd run --nproc N``, which starts it) launches one process per device and sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init` joins them into one process group (gloo
for CPU tensors, NCCL for CUDA tensors). Without ``WORLD_SIZE`` (or with 1) there is no process
group and every helper here is a no-op, so a single-process run does exactly what it did before.

The engine does not stand on fairseq2's trainer (docs/architecture.md says why), so there is no
fairseq2 gang to hand to it: seqkd calls ``torch.distributed`` directly. Gradients are summed in
buckets by :class:`GradientReducer` while the last backward pass of each update is still running,
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
BUCKET_ELEMENTS = 2**22  # gradients are summed in flat buckets of at most this many elements (16 MiB fp32)
SYNC_ENV, SYNC_CHOICES = "SEQKD_GRADIENT_SYNC", ("overlap", "after_backward")


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


class GradientReducer:
    """Sums the gradients of ``params`` over all ranks, overlapping the sums with the backward pass.

    The parameters are split into buckets of at most BUCKET_ELEMENTS elements, in reverse order (the
    order in which backward reaches them, roughly). During the last backward pass of an update
    (:meth:`arm`), a hook on each parameter marks its gradient final; a bucket whose gradients are
    all final starts an asynchronous ``all_reduce`` while backward goes on with the layers below.
    Buckets start strictly in order, so every rank issues the same collectives in the same order even
    when a rank did not reach some parameter (that bucket then waits for the end of backward).
    :meth:`finish` starts what is left, waits, and writes the sums back.

    Parameters that no rank reached in the last update (a head the method does not use) would hold
    their bucket, and every bucket after it, until backward ends: they are left out of the buckets
    from the next update on and summed at the end, in one more ``all_reduce``, on the updates where
    some rank does reach them. Every rank agrees on that set: it is the all-reduced "has a gradient"
    flags. A parameter no rank computed a gradient for keeps ``None`` (so the optimizer skips it, as
    it would in one process); one that only some ranks reached counts as zero on the others.

    The sums equal those of summing after backward; ``SEQKD_GRADIENT_SYNC=after_backward`` starts no
    bucket before backward ends (for measuring what the overlap gains).
    """

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        sync = os.environ.get(SYNC_ENV, SYNC_CHOICES[0])
        if sync not in SYNC_CHOICES:
            raise SeqkdError(f"{SYNC_ENV}={sync!r}: use one of {', '.join(SYNC_CHOICES)}")
        self.params = params
        self.active = world_size() > 1 and bool(params)
        self.overlap = sync == "overlap"
        self.idle: list[torch.nn.Parameter] = []  # not bucketed: no rank reached them in the last update
        self._bucket(params)
        self.armed = False
        self.waiting: list[int] = []  # per bucket: parameters whose gradient is not final yet
        self.started: list[tuple[list[torch.nn.Parameter], torch.Tensor, Any]] = []
        self.hooks = [p.register_post_accumulate_grad_hook(self._final) for p in params] if self.active and self.overlap else []

    def _bucket(self, params: list[torch.nn.Parameter]) -> None:
        self.buckets = list(_buckets(list(reversed(params))))
        self.bucket_of = {id(p): i for i, bucket in enumerate(self.buckets) for p in bucket}

    def arm(self) -> None:
        """Call before the update's last backward pass: its gradients are the final ones."""
        if self.active:
            self.armed, self.started = True, []
            self.waiting = [len(bucket) for bucket in self.buckets]

    def _final(self, param: torch.Tensor) -> None:
        bucket = self.bucket_of.get(id(param))
        if not self.armed or bucket is None:
            return
        self.waiting[bucket] -= 1
        while len(self.started) < len(self.buckets) and self.waiting[len(self.started)] == 0:
            self._start(self.buckets[len(self.started)])

    def _start(self, bucket: list[torch.nn.Parameter]) -> None:
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in bucket])
        self.started.append((bucket, flat, dist.all_reduce(flat, async_op=True)))

    def finish(self) -> None:
        """Call after the last backward pass: every gradient is then the sum over all ranks."""
        if not self.active:
            return
        self.armed = False
        while len(self.started) < len(self.buckets):
            self._start(self.buckets[len(self.started)])
        present = torch.tensor([float(p.grad is not None) for p in self.params], device=self.params[0].device)
        dist.all_reduce(present)
        reached = [n > 0 for n in present.tolist()]
        idle_ids = {id(p) for p in self.idle}
        idle_reached = [p for p, r in zip(self.params, reached) if r and id(p) in idle_ids]
        if idle_reached:
            self._start(idle_reached)
        for bucket, flat, work in self.started:
            work.wait()
            offset = 0
            for p in bucket:
                summed = flat[offset : offset + p.numel()].view_as(p)
                if p.grad is None:
                    p.grad = summed.clone()
                else:
                    p.grad.copy_(summed)
                offset += p.numel()
        self.started = []
        idle = [p for p, r in zip(self.params, reached) if not r]
        for p in idle:
            p.grad = None
        if {id(p) for p in idle} != idle_ids:
            self.idle = idle
            self._bucket([p for p in self.params if p.grad is not None])

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []


def _buckets(params: list[torch.nn.Parameter]) -> Iterator[list[torch.nn.Parameter]]:
    """Consecutive parameters of one dtype, up to BUCKET_ELEMENTS elements per bucket."""
    bucket: list[torch.nn.Parameter] = []
    size = 0
    for p in params:
        if bucket and (size + p.numel() > BUCKET_ELEMENTS or p.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += p.numel()
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
