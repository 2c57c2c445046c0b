"""``self_kd``: self-knowledge distillation (Liu, Shen & Lapata, NAACL 2021, without noise).

The teacher has the student's architecture and was trained first with MLE; the student learns
from its word-level distribution and the references:
L = (1 − λ)·NLL_ls(y | x) + λ·Σ_t KL(p_T ‖ p_S), averaged over target tokens (λ = ``alpha``).

That is word-level KD (``word_kd``) at T = 1 restricted to an equal-sized teacher, so this method
is ``WordKD`` with the paper's defaults and an architecture check.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from seqkd.hookspecs import hookimpl
from seqkd.tasks.base import TaskAdapter
from seqkd_plugins.word_kd import WordKD, WordKDOptions

# Settings that may differ between a self-KD teacher and its student: regularisation, not architecture.
NOT_ARCHITECTURE = frozenset({"dropout"})


class SelfKDOptions(WordKDOptions):
    alpha: float = Field(0.6, ge=0.0, le=1.0, description="λ, the weight of the KD term; 1 − λ weighs the NLL.")


def architecture_difference(student: BaseModel, teacher: BaseModel) -> str | None:
    """The first architecture setting on which ``teacher`` and ``student`` differ, if any."""
    s, t = student.model_dump(exclude=NOT_ARCHITECTURE), teacher.model_dump(exclude=NOT_ARCHITECTURE)
    for key in s:
        if s[key] != t.get(key):
            return f"{key}: teacher {t.get(key)!r}, student {s[key]!r}"
    return None


class SelfKD(WordKD):
    name = "self_kd"
    description = "Self-KD: (1-λ)*NLL + λ*KL(teacher || student) from an MLE teacher of the student's architecture"
    options_schema = SelfKDOptions

    @classmethod
    def check_models(cls, task: type[TaskAdapter], student: BaseModel, teachers: list[BaseModel]) -> str | None:
        for teacher in teachers:
            difference = architecture_difference(student, teacher)
            if difference is not None:
                return f"{cls.name} needs a teacher with the student's architecture; they differ in {difference}"
        return None


@hookimpl
def register_methods(register):
    register(SelfKD)
