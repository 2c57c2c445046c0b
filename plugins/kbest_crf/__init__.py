"""``kbest_crf``: sequence- and token-level distillation between linear-chain CRF taggers.

L = L_gold + alpha * L_seq + beta * L_tok, summed over the batch's sentences, where

- L_gold = -log p_S(y* | x), the student's CRF likelihood of the gold tags (``use_gold``),
- L_seq = -sum_i pi_i log p_S(y(i) | x) over the teacher's exact k-best Viterbi paths y(1..k), with
  pi the teacher's path probabilities at temperature T renormalised over those k paths (a
  k-path approximation of the teacher's whole sequence distribution),
- L_tok = sum_t KL(p_T(y_t | x) || p_S(y_t | x)) between the teacher's forward-backward marginals
  (at temperature T) and the student's.

The losses are the method, so they are written here by hand on top of ``seqkd.tasks.ner.crf``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from seqkd.hookspecs import hookimpl
from seqkd.method import LossOutput, Method
from seqkd.tasks.base import CRFOutput


class KBestCRFOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(4, ge=1, description="Teacher paths per sentence (exact k-best Viterbi).")
    alpha: float = Field(1.0, ge=0.0, description="Weight of the sequence-level term over the k-best paths.")
    beta: float = Field(1.0, ge=0.0, description="Weight of the token-level KL between CRF marginals.")
    temperature: float = Field(1.0, gt=0.0, description="The teacher's CRF scores are divided by T for pi and its marginals.")
    use_gold: bool = Field(True, description="Add the student's CRF likelihood of the gold tags.")


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
    """sum over real positions of KL(teacher marginals at T || student marginals)."""
    mask = student.mask
    log_q = student.crf.log_marginals(student.logits.float(), mask)[mask]
    log_p = teacher.crf.log_marginals(teacher.logits.float(), mask, temperature)[mask]
    return (log_p.exp() * (log_p - log_q)).sum()


class KBestCRF(Method):
    name = "kbest_crf"
    description = "CRF KD: gold NLL + a*(k-best teacher paths NLL) + b*KL(teacher || student marginals)"
    requires = frozenset({"crf"})
    needs_teacher = True
    needs_same_vocabulary = True  # the tag set must agree; the vocabulary file holds it
    options_schema = KBestCRFOptions

    options: KBestCRFOptions

    def loss(self, batch: Any) -> LossOutput:
        o = self.options
        student = self.task.forward(self.student, batch)
        n = int(student.mask.sum())
        total = student.logits.new_zeros(())
        parts: dict[str, float] = {}
        if o.use_gold:
            gold, _ = self.task.nll(student, 0.0)
            total, parts["gold"] = total + gold, gold.item()
        with torch.no_grad():
            teacher = self.task.forward(self.teacher, batch)
        if o.alpha > 0:
            kbest = teacher.crf.kbest(teacher.logits.float(), teacher.mask, o.k)
            tags, weights = path_weights(kbest, o.k, student.logits.shape[1], o.temperature, student.logits.device)
            seq = sequence_loss(student, tags, weights)
            total, parts["seq"] = total + o.alpha * seq, seq.item()
        if o.beta > 0:
            tok = marginal_kl(student, teacher, o.temperature)
            total, parts["tok"] = total + o.beta * tok, tok.item()
        return LossOutput(total, n, parts)


@hookimpl
def register_methods(register):
    register(KBestCRF)
