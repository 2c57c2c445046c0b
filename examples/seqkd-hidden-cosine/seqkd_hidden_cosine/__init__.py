"""``hidden_cosine``: word-level KD plus DistilBERT's cosine loss on the final hidden states.

    L = (1 - alpha) * NLL_ls + alpha * T^2 * KL(p_T || p_S) + beta * sum_t (1 - cos(h_S,t, h_T,t))

DistilBERT (Sanh et al. 2019) adds to the soft-target KD a cosine-embedding loss that turns the
student's final hidden states towards the teacher's. Here ``h_t`` is the representation the output
layer reads at target position ``t`` (for translation: the decoder output after its final layer
norm), taken from the adapter's ``hidden_states`` capability. All three terms are summed over the
real target positions, so the engine's division by the number of targets applies to each alike.

Widths: a cosine compares two vectors of one space, so the student's hidden states must be as wide
as the teacher's. DistilBERT keeps the teacher's width and halves the depth, and so does this
method: it refuses different widths, with a message, at the first step. A learned projection from
the student's width to the teacher's would be a parameter outside the student model, which the
engine neither optimises nor saves; keeping widths equal avoids that extra moving part.

The KL term reuses ``kd_loss`` of the built-in ``word_kd`` plugin; the teacher runs online.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from seqkd.errors import SeqkdError
from seqkd.hookspecs import hookimpl
from seqkd.method import LossOutput, Method
from seqkd.tasks.base import HiddenStates
from seqkd_plugins.word_kd import kd_loss

__version__ = "0.1.0"

# The seqkd plugin API this package is written against (seqkd.hookspecs.PLUGIN_API_VERSION).
SEQKD_PLUGIN_API = "1"


class HiddenCosineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the KD term; 1 - alpha weighs the NLL.")
    temperature: float = Field(2.0, gt=0.0, description="Softmax temperature T of teacher and student (DistilBERT: 2).")
    beta: float = Field(1.0, ge=0.0, description="Weight of the cosine term, per target token.")


class HiddenWidthMismatch(SeqkdError):
    """Student and teacher hidden states of different widths: no cosine between them."""


def cosine_loss(student: HiddenStates, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Sum over the unmasked positions of 1 - cos(h_S, h_T): DistilBERT's cosine-embedding loss
    with every pair labelled similar."""
    s_width, t_width = student.hidden.shape[-1], teacher_hidden.shape[-1]
    if s_width != t_width:
        raise HiddenWidthMismatch(
            f"method 'hidden_cosine' compares the final hidden states of student and teacher, so they must "
            f"be equally wide: the student's are {s_width} wide, the teacher's {t_width}. Give the student "
            f"the teacher's width and fewer layers (translation: decoder_dim, or encoder_dim when "
            f"decoder_dim is unset), or use method 'word_kd'"
        )
    mask = student.mask
    cos = F.cosine_similarity(student.hidden[mask].float(), teacher_hidden[mask].float(), dim=-1)
    return (1.0 - cos).sum()


class HiddenCosine(Method):
    name = "hidden_cosine"
    description = "Word-level KD plus DistilBERT's cosine loss between student and teacher final hidden states"
    requires = frozenset({"token_logits", "hidden_states"})
    needs_teacher = True
    needs_same_vocabulary = True  # the KL term compares distributions over one vocabulary
    options_schema = HiddenCosineOptions

    options: HiddenCosineOptions

    def loss(self, batch: Any) -> LossOutput:
        student = self.task.hidden_states(self.student, batch)
        nll, n = self.task.nll(student.output, self.label_smoothing)
        with torch.no_grad():  # not inference_mode: its tensors cannot enter the student's backward
            teacher = self.task.hidden_states(self.teacher, batch)
        kd = kd_loss(student.output, teacher.output.logits, self.options.temperature)
        cos = cosine_loss(student, teacher.hidden)
        alpha, beta = self.options.alpha, self.options.beta
        total = (1.0 - alpha) * nll + alpha * kd + beta * cos
        return LossOutput(total, n, {"nll": nll.item(), "kd": kd.item(), "cos": cos.item()})


@hookimpl
def register_methods(register):
    register(HiddenCosine)
