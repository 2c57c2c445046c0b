"""``kbest_crf``: sequence- and token-level distillation between linear-chain CRF taggers.

L = L_gold + alpha * L_seq + beta * L_tok, summed over the batch's sentences, where

- L_gold = -log p_S(y* | x), the student's CRF likelihood of the gold tags (``use_gold``),
- L_seq = -sum_i pi_i log p_S(y(i) | x) over the teacher's exact k-best Viterbi paths y(1..k), with
  pi the teacher's path probabilities at temperature T renormalised over those k paths (a
  k-path approximation of the teacher's whole sequence distribution),
- L_tok = T^2 * sum_t KL(p_T(y_t | x; T) || p_S(y_t | x; T)) between the teacher's and the student's
  forward-backward marginals, both at temperature T (the CRF's scores divided by T). As in Hinton
  et al.'s KD, T^2 keeps the term's gradients at the scale of T = 1 when T changes.

The teacher either runs at every step (``teacher_source: online``) or once, before training, into a
``kbest`` cache of its k-best paths, their scores and its marginals for every training sentence
(``teacher_source: cache``; built on the generic artifact store of ``seqkd.cache`` like the
``topk`` cache of ``word_kd``), so training never runs the teacher.

The losses are the method, so they are written here by hand on top of ``seqkd.tasks.ner.crf``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from seqkd.cache import Artifact, CacheError, build_artifact
from seqkd.hookspecs import hookimpl
from seqkd.method import LossOutput, Method, StageContext, Teacher, teacher_pass
from seqkd.tasks.base import CRFOutput, TaskAdapter
from seqkd.teacher_outputs import SHARD_SIZE, open_or_build, cache_parts

KBest = list[list[tuple[list[int], float]]]  # per sentence: (tag path, score), best first


class KBestCRFOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(4, ge=1, description="Teacher paths per sentence (exact k-best Viterbi).")
    alpha: float = Field(1.0, ge=0.0, description="Weight of the sequence-level term over the k-best paths.")
    beta: float = Field(1.0, ge=0.0, description="Weight of the token-level KL between CRF marginals.")
    temperature: float = Field(
        1.0, gt=0.0, description="CRF scores are divided by T: the teacher's for pi, both models' for the token-level marginals (that term is scaled by T^2)."
    )
    use_gold: bool = Field(True, description="Add the student's CRF likelihood of the gold tags.")
    teacher_source: Literal["online", "cache"] = Field(
        "online", description="Run the teacher every step, or read its cached k-best paths and marginals."
    )


def path_weights(kbest: list[list[tuple[list[int], float]]], k: int, length: int, temperature: float, device: torch.device):
    """The teacher's paths as a ``(N, k, T)`` tag tensor and their renormalised probabilities ``(N, k)``.

    A sentence with fewer than k distinct paths gets weight 0 on the missing ones.
    """
    n = len(kbest)
    tags = torch.zeros(n, k, length, dtype=torch.long)
    scores = torch.full((n, k), float("-inf"))
    for b, paths in enumerate(kbest):
        for i, (path, score) in enumerate(paths):
            tags[b, i, : len(path)] = torch.tensor(path)
            scores[b, i] = score / temperature
    return tags.to(device), torch.softmax(scores, dim=1).to(device)


def sequence_loss(student: CRFOutput, tags: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """-sum_b sum_i pi_bi log p_S(y_bi | x_b); the partition function is computed once per sentence."""
    n, k, length = tags.shape
    log_z = student.crf.log_partition(student.logits.float(), student.mask)
    emissions = student.logits.float().repeat_interleave(k, 0)
    scores = student.crf.path_score(emissions, tags.reshape(n * k, length), student.mask.repeat_interleave(k, 0))
    log_p = scores.view(n, k) - log_z.unsqueeze(1)
    return -(weights * log_p).nan_to_num().sum()


def marginal_kl(student: CRFOutput, teacher: CRFOutput, temperature: float) -> torch.Tensor:
    """T^2 * sum over real positions of KL(teacher marginals at T || student marginals at T)."""
    return marginal_kl_from(student, teacher.crf.log_marginals(teacher.logits.float(), student.mask, temperature), temperature)


def marginal_kl_from(student: CRFOutput, teacher_log_marginals: torch.Tensor, temperature: float) -> torch.Tensor:
    """``marginal_kl`` with the teacher's log-marginals (at ``temperature``) given, e.g. cached."""
    mask = student.mask
    log_q = student.crf.log_marginals(student.logits.float(), mask, temperature)[mask]
    log_p = teacher_log_marginals[mask]
    return temperature**2 * (log_p.exp() * (log_p - log_q)).sum()


# -- the ``kbest`` cache ------------------------------------------------------------------------


@torch.no_grad()
def build_kbest(task: TaskAdapter, teacher: Teacher, context: StageContext, k: int, temperature: float) -> Artifact:
    """Per training sentence: the teacher's k-best paths (int16 tags), their raw scores (float32) and
    its log-marginals at ``temperature`` (float16, one row of tags per token)."""
    folder = context.cache_dir / "kbest"
    parts = cache_parts(task, context, {"kind": "kbest", "k": k, "temperature": temperature})

    def make_shard(start: int, stop: int) -> dict[str, np.ndarray]:
        rows: dict[int, tuple[list[tuple[list[int], float]], torch.Tensor]] = {}
        for batch in task.indexed_batches("train", start, stop, context.max_tokens):
            with teacher_pass():
                out = task.forward(teacher.model, batch.to(context.device))
            paths = out.crf.kbest(out.logits.float(), out.mask, k)
            marginals = out.crf.log_marginals(out.logits.float(), out.mask, temperature).cpu()
            for j, item in enumerate(batch.indices.tolist()):
                rows[item] = (paths[j], marginals[j, : int(out.mask[j].sum())])
        missing = [i for i in range(start, stop) if i not in rows]
        if missing:
            raise CacheError(f"the task's batches skipped examples {missing[:5]}; cannot cache their paths")
        order = [rows[i] for i in range(start, stop)]
        return {
            "path_offsets": np.concatenate([[0], np.cumsum([len(p) for p, _ in order])]).astype(np.int64),
            "token_offsets": np.concatenate([[0], np.cumsum([len(m) for _, m in order])]).astype(np.int64),
            "tag_offsets": np.concatenate([[0], np.cumsum([len(path) for p, _ in order for path, _ in p])]).astype(np.int64),
            "tags": np.array([t for p, _ in order for path, _ in p for t in path], dtype=np.int16),
            "scores": np.array([score for p, _ in order for _, score in p], dtype=np.float32),
            "marginals": torch.cat([m for _, m in order]).numpy().astype(np.float16),
        }

    return open_or_build(folder, "kbest", parts, context, lambda: build_artifact(
        folder, "kbest", parts, task.num_examples("train"), SHARD_SIZE, make_shard,
        meta={"k": k, "temperature": temperature}, progress=lambda done, total: context.log(f"teacher k-best: {done}/{total} examples"),
    ))


def read_kbest(artifact: Artifact, items: list[int], length: int) -> tuple[KBest, torch.Tensor]:
    """The cached paths of ``items`` and their log-marginals padded to ``(N, length, K)``."""
    kbest: KBest = []
    rows = []
    for item in items:
        shard = artifact.shard_of(item)
        a, i = shard.arrays, item - shard.start
        paths = []
        for p in range(int(a["path_offsets"][i]), int(a["path_offsets"][i + 1])):
            lo, hi = int(a["tag_offsets"][p]), int(a["tag_offsets"][p + 1])
            paths.append((a["tags"][lo:hi].astype(np.int64).tolist(), float(a["scores"][p])))
        kbest.append(paths)
        rows.append(torch.from_numpy(a["marginals"][int(a["token_offsets"][i]) : int(a["token_offsets"][i + 1])].astype(np.float32)))
    marginals = torch.zeros(len(items), length, rows[0].shape[-1])
    for j, row in enumerate(rows):
        if len(row) > length:
            raise CacheError(f"{artifact.folder}: example {items[j]} has {len(row)} cached tokens, the batch {length}")
        marginals[j, : len(row)] = row
    return kbest, marginals


class KBestCRF(Method):
    name = "kbest_crf"
    description = "CRF KD: gold NLL + a*(k-best teacher paths NLL) + b*KL(teacher || student marginals)"
    requires = frozenset({"crf"})
    num_teachers = (1, 1)  # same_output_space: the tag set must agree; the vocabulary file holds it
    options_schema = KBestCRFOptions

    options: KBestCRFOptions
    cache: Artifact | None = None

    def prepare(self, context: StageContext) -> None:
        if self.options.teacher_source == "cache":
            self.cache = build_kbest(self.task, self.teachers[0], context, self.options.k, self.options.temperature)

    def _teacher(self, batch: Any, length: int, device: torch.device) -> tuple[KBest, torch.Tensor]:
        """The teacher's k-best paths and log-marginals (at T) for the batch: cached or computed now."""
        o = self.options
        if self.cache is not None:
            kbest, log_marginals = read_kbest(self.cache, batch.indices.tolist(), length)
            return kbest, log_marginals.to(device)
        with teacher_pass():  # the loss reads the marginals through new tensors (``[mask]``)
            teacher = self.task.forward(self.teacher, batch)
            kbest = teacher.crf.kbest(teacher.logits.float(), teacher.mask, o.k) if o.alpha > 0 else []
            log_marginals = teacher.crf.log_marginals(teacher.logits.float(), teacher.mask, o.temperature)
        return kbest, log_marginals

    def loss(self, batch: Any, step: int) -> LossOutput:
        o = self.options
        student = self.task.forward(self.student, batch)
        n = int(student.mask.sum())
        total = student.logits.new_zeros(())
        parts: dict[str, float] = {}
        if o.use_gold:
            gold, _ = self.task.nll(student, 0.0)
            total, parts["gold"] = total + gold, gold.item()
        kbest, teacher_log_marginals = self._teacher(batch, student.logits.shape[1], student.logits.device)
        if o.alpha > 0:
            tags, weights = path_weights(kbest, o.k, student.logits.shape[1], o.temperature, student.logits.device)
            seq = sequence_loss(student, tags, weights)
            total, parts["seq"] = total + o.alpha * seq, seq.item()
        if o.beta > 0:
            tok = marginal_kl_from(student, teacher_log_marginals, o.temperature)
            total, parts["tok"] = total + o.beta * tok, tok.item()
        return LossOutput(total, n, parts)


@hookimpl
def register_methods(register):
    register(KBestCRF)
