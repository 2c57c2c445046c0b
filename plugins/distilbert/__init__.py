"""``distilbert``: the DistilBERT loss (Sanh et al. 2019).

L = α_ce·T²·KL(softmax(z_T/T) ‖ softmax(z_S/T)) + α_task·CE(y, z_S) + α_cos·(1 − cos(h_S, h_T))

with z the task's logits and h the last layer's hidden state at each real token. Every term is a
mean per target once the engine divides by the task's target count n: the KL and CE are sums over
the targets, the cosine term is the mean over a batch's tokens times n. On a classification task z
are the class logits and n the sentences; on ``masked_lm`` (DistilBERT's own setting) z are the
vocabulary logits at the masked positions, the task's loss is the MLM cross-entropy there (α_task
is DistilBERT's α_mlm) and n the masked tokens. DistilBERT's initialisation (every other teacher
layer) is the stage's ``init: teacher`` with ``init_layers: [0, 2, 4]``, so any method's student
can start the same way and a comparison of losses compares only the losses.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from seqkd.errors import SeqkdError
from seqkd.hookspecs import hookimpl
from seqkd.losses import hidden_cosine, token_kl
from seqkd.method import LossOutput, Method, StageContext, teacher_pass
from seqkd_plugins.layer_kd import probe


class DistilBERTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha_ce: float = Field(5.0, ge=0.0, description="Weight of the soft-target KL (T² included).")
    alpha_task: float = Field(2.0, ge=0.0, description="Weight of the task's own loss (CE on the gold labels; MLM when distilling a masked LM).")
    alpha_cos: float = Field(1.0, ge=0.0, description="Weight of the cosine loss between last-layer hidden states.")
    temperature: float = Field(2.0, gt=0.0, description="Softmax temperature T.")


class DistilBERT(Method):
    name = "distilbert"
    description = "DistilBERT: a_ce*T^2*KL + a_task*CE + a_cos*(1 - cos) on last hidden states"
    requires = frozenset({"layer_states"})
    num_teachers = (1, 1)
    options_schema = DistilBERTOptions

    options: DistilBERTOptions

    def prepare(self, context: StageContext) -> None:
        """Refuse a student whose width the cosine term cannot compare."""
        student, teacher = (probe(self.task, m, context.max_tokens).hidden[-1].shape[-1] for m in (self.student, self.teacher))
        if student != teacher and self.options.alpha_cos > 0:
            raise SeqkdError(f"distilbert: the student is {student} wide and the teacher {teacher}; the cosine term needs equal widths (or alpha_cos: 0)")

    def loss(self, batch: Any, step: int) -> LossOutput:
        o = self.options
        student = self.task.layer_states(self.student, batch)
        with teacher_pass():
            teacher = self.task.layer_states(self.teacher, batch)
        task, n = self.task.nll(student.output, self.label_smoothing)
        kd = token_kl(student.output, teacher.output.logits, o.temperature)
        tokens = student.mask.sum().clamp(min=1)
        cos = hidden_cosine(student.hidden[-1], teacher.hidden[-1], student.mask) * (n / tokens)
        total = o.alpha_ce * kd + o.alpha_task * task + o.alpha_cos * cos
        return LossOutput(total, n, {"task": task.item(), "kd": kd.item(), "cos": cos.item()})


@hookimpl
def register_methods(register):
    register(DistilBERT)
