"""The teacher outputs seqkd caches, laid out on the generic artifact store (``seqkd.cache``).

- ``topk``: per target token of every training example, the teacher's top-k log-probabilities
  (fp16) and their vocabulary indices (uint16 when the vocabulary fits, else int32), for offline
  word-level KD. Rows of all examples in a shard are concatenated; ``offsets`` maps an example to
  its rows. k = 8 costs 8 x (2 + 2) = 32 bytes per token plus 8 bytes per example.
- ``nbest``: per training example, the teacher's n-best beam-search hypotheses and their scores,
  for sequence-level KD.

Tail mass: the top-k probabilities of a token sum to less than one; the rest, 1 - sum(top-k), is the
teacher's *tail* mass. It is not stored (it follows from the values) and offline KD treats it as one
extra outcome: KL = sum_top-k p log(p / q) + p_tail log(p_tail / q_tail), where q_tail is the
student's mass outside the same k indices. With k equal to the vocabulary size there is no tail and
the loss equals online word-KD.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from seqkd import distributed
from seqkd.cache import MANIFEST, Artifact, CacheError, build_artifact, make_key
from seqkd.method import StageContext, Teacher, teacher_pass
from seqkd.tasks.base import NBest, TaskAdapter

SHARD_SIZE = 4096  # examples per shard


def cache_parts(task: TaskAdapter, context: StageContext, settings: dict) -> dict[str, str]:
    """What a cache's key is made of; a mismatch in any part refuses the cache, naming the part."""
    if not context.teacher_ids:
        raise CacheError("a teacher-output cache needs a teacher")
    return {
        "teacher": ",".join(context.teacher_ids),
        "settings": json.dumps(settings, sort_keys=True),
        "vocabulary": task.vocabulary_id(),
        "data": task.fingerprint(),
    }


def _same_key_elsewhere(folder: Path, parts: dict[str, str]) -> Path | None:
    """A finished artifact of the same name and key built by another stage of this run."""
    key = make_key(parts)
    for other in sorted(folder.parent.parent.glob(f"*/{folder.name}/{MANIFEST}")):
        try:
            found = json.loads(other.read_text()).get("key") == key
        except (ValueError, OSError, AttributeError):  # a damaged manifest is no candidate
            continue
        if other.parent != folder and found:
            return other.parent
    return None


def open_or_build(folder: Path, kind: str, parts: dict[str, str], context: StageContext, build) -> Artifact:
    """This stage's artifact; or another stage's with the same key (e.g. the same teacher's beam
    outputs for seq_kd and weight_distill), read in place; or a new build."""
    def discard_stale() -> None:
        try:
            Artifact.open(folder, kind, parts)
        except CacheError as exc:
            context.log(f"rebuilding {folder}: {exc}")
            shutil.rmtree(folder)

    if context.rebuild and (folder / MANIFEST).exists():
        distributed.on_main(discard_stale)  # rank 0 alone removes; build() then opens or rebuilds
    if not (folder / MANIFEST).exists():
        other = _same_key_elsewhere(folder, parts)
        if other is not None:
            context.log(f"reusing {other}: built for the same teacher, data and settings")
            return Artifact.open(other, kind, parts)
    return build()


def progress_log(context: StageContext, what: str):
    def report(done: int, total: int) -> None:
        context.log(f"{what}: {done}/{total} examples")

    return report


# -- top-k log-probabilities --------------------------------------------------------------------


@torch.no_grad()
def build_topk(
    task: TaskAdapter, teacher: Teacher, context: StageContext, k: int, temperature: float, folder: Path | None = None
) -> Artifact:
    """The teacher's top-k rows for every training example; the teacher is loaded only to build them."""
    folder = folder or context.cache_dir / "topk"
    parts = cache_parts(task, context, {"kind": "topk", "k": k, "temperature": temperature})

    def make_shard(start: int, stop: int) -> dict[str, np.ndarray]:
        rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        vocab = 0
        for batch in task.indexed_batches("train", start, stop, context.max_tokens):
            with teacher_pass():  # the batches are made outside: tasks may keep the tensors they read
                out = task.forward(teacher.model, batch.to(context.device))
            vocab = out.logits.shape[-1]
            if k > vocab:
                raise CacheError(f"top-k k={k} exceeds the vocabulary size {vocab}")
            logp = torch.log_softmax(out.logits.float() / temperature, dim=-1)
            values, indices = logp.topk(k, dim=-1)
            for j, item in enumerate(batch.indices.tolist()):
                n = int(out.mask[j].sum())
                rows[item] = (values[j, :n].cpu(), indices[j, :n].cpu())
        missing = [i for i in range(start, stop) if i not in rows]
        if missing:
            raise CacheError(f"the task's batches skipped examples {missing[:5]}; cannot cache their rows")
        order = [rows[i] for i in range(start, stop)]
        lengths = [len(v) for v, _ in order]
        index_dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.int32
        return {
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "values": torch.cat([v for v, _ in order]).numpy().astype(np.float16),
            "indices": torch.cat([i for _, i in order]).numpy().astype(index_dtype),
            "vocab_size": np.array([vocab], dtype=np.int64),
        }

    return open_or_build(folder, "topk", parts, context, lambda: build_artifact(
        folder, "topk", parts, task.num_examples("train"), SHARD_SIZE, make_shard,
        meta={"k": k, "temperature": temperature}, progress=progress_log(context, "teacher top-k"),
    ))


class TopK:
    """Reads cached top-k rows back as padded (N, T, k) tensors for a batch."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.k: int = artifact.meta["k"]
        self.vocab_size = int(artifact.shard(0).arrays["vocab_size"][0])

    def rows(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        shard = self.artifact.shard_of(item)
        offsets = shard.arrays["offsets"]
        lo, hi = offsets[item - shard.start], offsets[item - shard.start + 1]
        return shard.arrays["values"][lo:hi], shard.arrays["indices"][lo:hi]

    def batch(self, items: list[int], length: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if vocab_size != self.vocab_size:
            raise CacheError(
                f"{self.artifact.folder}: cache holds indices into a vocabulary of {self.vocab_size}, "
                f"the student's has {vocab_size}"
            )
        values = torch.full((len(items), length, self.k), float("-inf"))
        indices = torch.zeros((len(items), length, self.k), dtype=torch.long)
        for j, item in enumerate(items):
            v, i = self.rows(item)
            if len(v) > length:
                raise CacheError(f"{self.artifact.folder}: example {item} has {len(v)} cached rows, the batch {length}")
            values[j, : len(v)] = torch.from_numpy(v.astype(np.float32))
            indices[j, : len(i)] = torch.from_numpy(i.astype(np.int64))
        return values, indices


# -- n-best hypotheses --------------------------------------------------------------------------


def build_nbest(
    task: TaskAdapter, teacher: Teacher, context: StageContext, settings: BaseModel, nbest: int, shard_size: int = SHARD_SIZE
) -> Artifact:
    """The teacher's ``nbest`` hypotheses for every training source, decoded with the task's
    generation ``settings`` (part of the cache key as validated, defaults filled in)."""
    folder = context.cache_dir / "nbest"
    settings_key = {**settings.model_dump(mode="json"), "nbest": nbest}
    parts = cache_parts(task, context, {"kind": "nbest", **settings_key})

    def make_shard(start: int, stop: int) -> dict[str, np.ndarray]:
        nbest_lists = task.generate(teacher.model, "train", start, stop, settings, nbest)
        hyps = [h for item in nbest_lists for h in item]
        return {
            "item_offsets": np.concatenate([[0], np.cumsum([len(item) for item in nbest_lists])]).astype(np.int64),
            "token_offsets": np.concatenate([[0], np.cumsum([len(t) for t, _ in hyps])]).astype(np.int64),
            "tokens": np.array([tok for t, _ in hyps for tok in t], dtype=np.int32),
            "scores": np.array([s for _, s in hyps], dtype=np.float32),
        }

    return open_or_build(folder, "nbest", parts, context, lambda: build_artifact(
        folder, "nbest", parts, task.num_examples("train"), shard_size, make_shard,
        meta=settings_key, progress=progress_log(context, "teacher beam search"),
    ))


def read_nbest(artifact: Artifact, item: int) -> NBest:
    shard = artifact.shard_of(item)
    a = shard.arrays
    lo, hi = a["item_offsets"][item - shard.start], a["item_offsets"][item - shard.start + 1]
    return [
        (a["tokens"][a["token_offsets"][h] : a["token_offsets"][h + 1]].tolist(), float(a["scores"][h]))
        for h in range(lo, hi)
    ]
