"""Distillation losses over adapters' typed outputs: part of the versioned plugin API.

Conventions, the same for every function here:

- **Summed**, over the positions where ``mask`` is True (padding never counts); the engine divides
  a step's loss by its number of targets, so a method returns sums.
- **T² inside**: a KL at temperature T is multiplied by T², so its gradients keep their scale as T
  changes (Hinton et al., 2015).
- **Direction**: ``forward`` is KL(teacher ‖ student), the usual KD loss (mass-covering);
  ``reverse`` is KL(student ‖ teacher) (mode-seeking).
- ``logits`` are ``(N, T, V)``, ``mask`` ``(N, T)`` bool, ``hidden`` ``(N, T, D)``; computed in float32.

These are the method side of distillation, written by hand; ``word_kd`` and the other built-ins
use them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from seqkd.tasks.base import TokenLogits


def token_kl(
    student: TokenLogits, teacher_logits: torch.Tensor, temperature: float = 1.0,
    direction: Literal["forward", "reverse"] = "forward",
) -> torch.Tensor:
    """T² · Σ_positions KL between the teacher's and the student's softmax at temperature T."""
    mask = student.mask
    log_q = F.log_softmax(student.logits[mask].float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits[mask].float() / temperature, dim=-1)
    if direction == "reverse":
        log_p, log_q = log_q, log_p
    return F.kl_div(log_q, log_p, log_target=True, reduction="sum") * temperature**2


def topk_kl(student: TokenLogits, values: torch.Tensor, indices: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · Σ_positions KL(teacher ‖ student) from the teacher's top-k log-probabilities ``values``
    at ``indices`` (``(N, T, k)``, as the top-k cache stores them). The teacher's mass outside the k
    (its tail) counts as one more outcome against the student's mass outside the same k, so the
    loss stays a proper KL (zero when the student equals the teacher) and equals ``token_kl`` when k
    is the vocabulary size."""
    mask = student.mask
    log_q = F.log_softmax(student.logits[mask].float() / temperature, dim=-1)
    log_p = values[mask]
    log_q_top = log_q.gather(-1, indices[mask])
    p = log_p.exp()
    kl = (p * (log_p - log_q_top)).sum()
    if indices.shape[-1] < log_q.shape[-1]:
        p_tail = (1.0 - p.sum(-1)).clamp(min=0.0)
        q_tail = (1.0 - log_q_top.exp().sum(-1)).clamp(min=1e-8)
        kl = kl + (p_tail * (p_tail.clamp(min=1e-12).log() - q_tail.log())).sum()
    return kl * temperature**2


def hidden_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_positions (1 − cos(student, teacher)): hidden states of equal width (project first otherwise)."""
    return (1.0 - F.cosine_similarity(student[mask].float(), teacher[mask].float(), dim=-1)).sum()


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_positions ‖student − teacher‖²: hidden states of equal width (project first otherwise)."""
    return F.mse_loss(student[mask].float(), teacher[mask].float(), reduction="sum")
