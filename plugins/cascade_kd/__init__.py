"""``cascade_kd``: knowledge distillation for cascade speech translation (Fukuda, Sudoh &
Nakamura, IWSLT 2021).

In an ASR → MT cascade the MT model reads recognition errors at test time. The teacher MT reads
the human transcript of an utterance; the student MT reads the ASR transcript of the same
utterance (the task's input view ``student_view``, made by an ASR stage's outputs) and learns the
teacher's word-level distributions on the same reference prefixes:

L = (1 − α)·NLL(y | x_asr) + α·Σ_t KL(p_T(· | x_gold, y<t) ‖ p_S(· | x_asr, y<t))

That is ``word_kd`` with the student's input swapped, so this method is ``WordKD`` with a
``student_forward`` that reads the view (training and validation alike); the teacher's outputs
may be cached, since they depend on the gold source only. The paper's "KD then fine-tuning" is a
following ``supervised`` stage with ``init:`` this one and ``options: {view: asr}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from seqkd.hookspecs import hookimpl
from seqkd_plugins.word_kd import WordKD, WordKDOptions


class CascadeKDOptions(WordKDOptions):
    student_view: str = Field("asr", description="The input view the student reads (ASR transcripts); the teacher reads the task's own sources.")


class CascadeKD(WordKD):
    name = "cascade_kd"
    description = "Cascade KD: (1-a)*NLL(y|x_asr) + a*KL(teacher(x_gold) || student(x_asr)) per target token"
    options_schema = CascadeKDOptions

    options: CascadeKDOptions

    def student_forward(self, batch: Any) -> Any:
        return self.task.forward(self.student, batch, view=self.options.student_view)


@hookimpl
def register_methods(register):
    register(CascadeKD)
