"""``word_kd``: word-level knowledge distillation (Hinton et al. 2015; Kim & Rush 2016).

L = (1 - alpha) * NLL_ls(y | x) + alpha * T^2 * sum_t KL(softmax(z_T,t / T) || softmax(z_S,t / T)).
The loss is the method itself, so it is written here by hand.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from seqkd.hookspecs import hookimpl
from seqkd.method import LossOutput, Method
from seqkd.tasks.base import TokenLogits


class WordKDOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the KD term; 1 - alpha weighs the NLL.")
    temperature: float = Field(1.0, gt=0.0, description="Softmax temperature T of teacher and student.")


def word_kd_loss(
    student: TokenLogits, teacher_logits: torch.Tensor, alpha: float, temperature: float, nll: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (total, kd) summed over the unmasked positions."""
    mask = student.mask
    s = F.log_softmax(student.logits[mask].float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits[mask].float() / temperature, dim=-1)
    kd = F.kl_div(s, t, log_target=True, reduction="sum") * temperature**2
    return (1.0 - alpha) * nll + alpha * kd, kd


class WordKD(Method):
    name = "word_kd"
    description = "Word-level KD: (1-a)*NLL + a*T^2*KL(teacher || student) per target token"
    requires = frozenset({"token_logits"})
    needs_teacher = True
    needs_same_vocabulary = True
    options_schema = WordKDOptions

    options: WordKDOptions

    def loss(self, batch: Any) -> LossOutput:
        with torch.no_grad():
            teacher_logits = self.task.forward(self.teacher, batch).logits
        output = self.task.forward(self.student, batch)
        nll, n = self.task.nll(output, self.label_smoothing)
        total, kd = word_kd_loss(output, teacher_logits, self.options.alpha, self.options.temperature, nll)
        return LossOutput(total, n, {"nll": nll.item(), "kd": kd.item()})


@hookimpl
def register_methods(register):
    register(WordKD)
