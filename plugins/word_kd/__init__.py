"""``word_kd``: word-level knowledge distillation (Hinton et al. 2015; Kim & Rush 2016).

L = (1 - alpha) * NLL_ls(y | x) + alpha * T^2 * sum_t KL(softmax(z_T,t / T) || softmax(z_S,t / T)).

The KL terms are ``seqkd.losses.token_kl`` and ``topk_kl``. The teacher either runs at every step
(``teacher_source: online``) or once, before training, into a cache of its top-k log-probabilities
per target token (``teacher_source: cache``; see ``seqkd.teacher_outputs`` for the layout and how
the tail mass is handled).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from seqkd.hookspecs import hookimpl
from seqkd.losses import token_kl, topk_kl
from seqkd.method import LossOutput, Method, StageContext, teacher_pass
from seqkd.tasks.base import TokenLogits
from seqkd.teacher_outputs import TopK, build_topk


class WordKDOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the KD term; 1 - alpha weighs the NLL.")
    temperature: float = Field(1.0, gt=0.0, description="Softmax temperature T of teacher and student.")
    teacher_source: Literal["online", "cache"] = Field(
        "online", description="Run the teacher every step, or read its cached top-k log-probabilities."
    )
    top_k: int = Field(8, ge=1, description="Log-probabilities cached per target token (teacher_source: cache).")


class WordKD(Method):
    name = "word_kd"
    description = "Word-level KD: (1-a)*NLL + a*T^2*KL(teacher || student) per target token"
    requires = frozenset({"token_logits"})
    num_teachers = (1, 1)
    options_schema = WordKDOptions

    options: WordKDOptions
    topk: TopK | None = None

    def prepare(self, context: StageContext) -> None:
        if self.options.teacher_source == "cache":
            self.topk = TopK(build_topk(self.task, self.teachers[0], context, self.options.top_k, self.options.temperature))

    def loss(self, batch: Any, step: int) -> LossOutput:
        output = self.student_forward(batch)
        nll, n = self.task.nll(output, self.label_smoothing)
        if self.topk is not None:
            values, indices = self.topk.batch(batch.indices.tolist(), output.logits.shape[1], output.logits.shape[-1])
            kd = topk_kl(output, values.to(output.logits.device), indices.to(output.logits.device), self.options.temperature)
        else:
            with teacher_pass():  # token_kl derives new tensors from the logits before anything is saved
                teacher_logits = self.task.forward(self.teacher, batch).logits
            kd = token_kl(output, teacher_logits, self.options.temperature)
        total = (1.0 - self.options.alpha) * nll + self.options.alpha * kd
        return LossOutput(total, n, {"nll": nll.item(), "kd": kd.item()})


@hookimpl
def register_methods(register):
    register(WordKD)
