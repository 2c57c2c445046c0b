"""``noisy_self_kd``: noisy self-knowledge distillation (Liu, Shen & Lapata, NAACL 2021).

Self-KD (``self_kd``) with noise on both sides of the KL term:

- the teacher keeps dropout active during its forward, at its own rate (``teacher_dropout``:
  every ``torch.nn.Dropout`` of the teacher is set to it; 0 runs the teacher in eval mode);
- the student's and the teacher's copies of each source get input noise drawn *independently*
  (``noise``: the task's ``noise_schema``; for the encoder-decoder tasks word drop, replacement by
  one of the teacher's nearest embedding neighbours, local word shuffle, sentence drop and
  local sentence shuffle), on the copies ``noisy_copies`` names.

L = (1 − λ)·NLL_ls(y | x̃_S) + λ·Σ_t KL(p_T(· | x̃_T, y<t) ‖ p_S(· | x̃_S, y<t)), averaged over
target tokens. The noise comes from the method's own generator, seeded from the stage's seed (and
rank) and checkpointed, so a run is reproducible by seed and a resumed run draws the same noise.
The loss is written by hand from the paper; the noise is the task's ``perturb``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, create_model

from seqkd import distributed
from seqkd.hookspecs import hookimpl
from seqkd.losses import token_kl
from seqkd.method import LossOutput, StageContext, teacher_pass
from seqkd.tasks.base import TaskAdapter
from seqkd_plugins.self_kd import SelfKD


class NoisySelfKDOptions(BaseModel):
    """The method's own options; ``options_model`` adds ``noise:``, the task's noise settings."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.6, ge=0.0, le=1.0, description="λ, the weight of the KD term; 1 − λ weighs the NLL.")
    temperature: float = Field(1.0, gt=0.0, description="Softmax temperature T of teacher and student.")
    teacher_dropout: float = Field(0.15, ge=0.0, lt=1.0, description="Dropout kept active in the teacher's forward; 0 runs it in eval mode.")
    noisy_copies: list[Literal["student", "teacher"]] = Field(
        ["student", "teacher"], description="Which copies of the source get input noise ([] for none)."
    )


class NoisySelfKD(SelfKD):
    name = "noisy_self_kd"
    description = "Noisy self-KD: self-KD with teacher dropout and independent input noise on teacher and student"
    requires = frozenset({"token_logits", "perturb"})
    options_schema = NoisySelfKDOptions

    generator: torch.Generator
    neighbours: torch.Tensor | None = None

    @classmethod
    def options_model(cls, task: type[TaskAdapter]) -> type[BaseModel]:
        if task.noise_schema is None:
            return cls.options_schema
        noise = (task.noise_schema, Field(default_factory=task.noise_schema, description="Input noise (the task's noise settings)."))
        return create_model(f"{cls.options_schema.__name__}[{task.name}]", __base__=cls.options_schema, noise=noise)

    def prepare(self, context: StageContext) -> None:
        o = self.options
        teacher = self.teacher
        if o.teacher_dropout > 0:
            teacher.train()
            for module in teacher.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = o.teacher_dropout
        # the engine seeded the global generator with the stage's seed
        seed = int(torch.randint(2**62, ())) + distributed.rank()
        self.generator = torch.Generator().manual_seed(seed)
        if o.noisy_copies:
            self.neighbours = self.task.noise_neighbours(teacher, o.noise)

    def state_dict(self) -> dict[str, Any]:
        return {"noise_generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["noise_generator"])

    def _copy(self, batch: Any, role: str) -> Any:
        if role not in self.options.noisy_copies:
            return batch
        return self.task.perturb(batch, self.options.noise, self.generator, neighbours=self.neighbours)

    def loss(self, batch: Any, step: int) -> LossOutput:
        o = self.options
        student_batch, teacher_batch = self._copy(batch, "student"), self._copy(batch, "teacher")
        output = self.task.forward(self.student, student_batch)
        nll, n = self.task.nll(output, self.label_smoothing)
        with teacher_pass():  # token_kl derives new tensors from the logits before anything is saved
            teacher_logits = self.task.forward(self.teacher, teacher_batch).logits
        kd = token_kl(output, teacher_logits, o.temperature)
        total = (1.0 - o.alpha) * nll + o.alpha * kd
        return LossOutput(total, n, {"nll": nll.item(), "kd": kd.item()})


@hookimpl
def register_methods(register):
    register(NoisySelfKD)
