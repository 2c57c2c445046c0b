"""``hidden_cosine``: word-level KD plus DistilBERT's cosine loss on the final hidden states.

    L = (1 - alpha) * NLL_ls + alpha * T^2 * KL(p_T || p_S) + beta * sum_t (1 - cos(P h_S,t, h_T,t))

DistilBERT (Sanh et al. 2019) adds to the soft-target KD a cosine-embedding loss that turns the
student's final hidden states towards the teacher's. Here ``h_t`` is the representation the output
layer reads at target position ``t`` (for translation: the decoder output after its final layer
norm), taken from the adapter's ``hidden_states`` capability. All three terms are summed over the
real target positions, so the engine's division by the number of targets applies to each alike.

Widths: a cosine compares two vectors of one space. DistilBERT keeps the teacher's width and halves
the depth, and by default so does this method (``P`` is the identity): a student of another width
is refused, with a message, at the first step. With ``projection: true`` ``P`` is a learned linear
map from the student's width to the teacher's. It is the method's own module (``self.modules``):
the engine optimises it with the student and checkpoints it, and it never enters the student's
model file, so the distilled student runs without it.

The KL term is ``seqkd.losses.token_kl``; the teacher runs online.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from seqkd.errors import SeqkdError
from seqkd.hookspecs import hookimpl
from seqkd.method import LossOutput, Method, StageContext
from seqkd.tasks.base import HiddenStates
from seqkd.losses import token_kl

__version__ = "0.2.0"

# The seqkd plugin API this package is written against (seqkd.hookspecs.PLUGIN_API_VERSION).
SEQKD_PLUGIN_API = "2"


class HiddenCosineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the KD term; 1 - alpha weighs the NLL.")
    temperature: float = Field(2.0, gt=0.0, description="Softmax temperature T of teacher and student (DistilBERT: 2).")
    beta: float = Field(1.0, ge=0.0, description="Weight of the cosine term, per target token.")
    projection: bool = Field(
        False, description="Learn a linear map from the student's hidden width to the teacher's (for a narrower student)."
    )


class HiddenWidthMismatch(SeqkdError):
    """Student and teacher hidden states of different widths: no cosine between them."""


def cosine_loss(student: HiddenStates, teacher_hidden: torch.Tensor, projection: torch.nn.Module | None = None) -> torch.Tensor:
    """Sum over the unmasked positions of 1 - cos(P h_S, h_T): DistilBERT's cosine-embedding loss
    with every pair labelled similar; ``projection`` is P (the identity when ``None``)."""
    mask = student.mask
    hidden = student.hidden[mask].float()
    if projection is not None:
        hidden = projection(hidden)
    s_width, t_width = hidden.shape[-1], teacher_hidden.shape[-1]
    if s_width != t_width:
        raise HiddenWidthMismatch(
            f"method 'hidden_cosine' compares the final hidden states of student and teacher, so they must "
            f"be equally wide: the student's are {s_width} wide, the teacher's {t_width}. Give the student "
            f"the teacher's width and fewer layers (translation: decoder_dim, or encoder_dim when "
            f"decoder_dim is unset), or set `projection: true` to learn a map between the widths"
        )
    cos = F.cosine_similarity(hidden, teacher_hidden[mask].float(), dim=-1)
    return (1.0 - cos).sum()


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class HiddenCosine(Method):
    name = "hidden_cosine"
    description = "Word-level KD plus DistilBERT's cosine loss between student and teacher final hidden states"
    requires = frozenset({"token_logits", "hidden_states"})
    num_teachers = (1, 1)
    same_output_space = True  # the KL term compares distributions over one vocabulary
    options_schema = HiddenCosineOptions

    options: HiddenCosineOptions

    def prepare(self, context: StageContext) -> None:
        """With ``projection``, create P now: the engine builds the optimizer after ``prepare``, so
        a module added later would never be trained. The widths come from one validation batch
        through the adapter, so the method reads no model's internals."""
        if not self.options.projection:
            return
        batch = self.task.valid_batches(context.max_tokens)[0]
        with torch.no_grad():  # the student is still where the task built it (the CPU), the teacher on context.device
            s_width = self.task.hidden_states(self.student, batch.to(_device(self.student))).hidden.shape[-1]
            t_width = self.task.hidden_states(self.teacher, batch.to(_device(self.teacher))).hidden.shape[-1]
        self.modules["projection"] = torch.nn.Linear(s_width, t_width, bias=False)
        context.log(f"hidden_cosine: learned projection {s_width} -> {t_width} ({s_width * t_width} parameters)")

    def loss(self, batch: Any, step: int) -> LossOutput:
        student = self.task.hidden_states(self.student, batch)
        nll, n = self.task.nll(student.output, self.label_smoothing)
        with torch.no_grad():  # not inference_mode: its tensors cannot enter the student's backward
            teacher = self.task.hidden_states(self.teacher, batch)
        kd = token_kl(student.output, teacher.output.logits, self.options.temperature)
        cos = cosine_loss(student, teacher.hidden, self.modules["projection"] if "projection" in self.modules else None)
        alpha, beta = self.options.alpha, self.options.beta
        total = (1.0 - alpha) * nll + alpha * kd + beta * cos
        return LossOutput(total, n, {"nll": nll.item(), "kd": kd.item(), "cos": cos.item()})


@hookimpl
def register_methods(register):
    register(HiddenCosine)
