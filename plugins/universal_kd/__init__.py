"""``universal_kd``: Universal-KD (Wu et al., EMNLP 2021): intermediate layers matched in output space.

Each chosen layer j of the teacher and i of the student gets a pseudo-classifier (a linear layer
on the layer's mean over real tokens) owned by the method (``self.modules``: trained with the
student, checkpointed with the method, never in the student's model file). Each student layer
attends over the teacher layers to build its target:

    α_ij = softmax_j(q(h_S^i) · h_T^j / √d_T),   z̄_T^i = Σ_j α_ij z_T^j,
    L_i = T²·KL(σ(z̄_T^i / T) ‖ σ(z_S^i / T)),
    L = CE + α_kd·T²·KL(σ(z_T / T) ‖ σ(z_S / T)) + β·Σ_i L_i + CE of the teacher's pseudo-classifiers,

with h the layers' pooled states and q the identity when teacher and student are equally wide,
else a learned projection (so depth, width and architecture may all differ, e.g. a pretrained
MiniLM teacher and an encoder built from the recipe). The dot product is scaled by √d_T as in
Transformer attention, so that wide layers do not saturate the softmax. The teacher stays frozen:
its pseudo-classifiers learn from the gold labels alone (the last term), and the targets z̄ carry
no gradient into them; the student learns through its own classifiers and the attention weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from seqkd.hookspecs import hookimpl
from seqkd.losses import token_kl
from seqkd.method import LossOutput, Method, StageContext, teacher_pass
from seqkd.tasks.base import LayerStates
from seqkd_plugins.layer_kd import check_layers, per_sequence, probe


class UniversalKDOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha_kd: float = Field(1.0, ge=0.0, description="Weight of the final-layer KD term.")
    beta: float = Field(1.0, ge=0.0, description="Weight of the sum of the intermediate-layer terms.")
    temperature: float = Field(1.0, gt=0.0, description="Softmax temperature T of every KL term.")
    student_layers: list[int] | None = Field(
        None, min_length=1, description="Student layers (1-based) with a pseudo-classifier; default: every layer below the last.",
    )
    teacher_layers: list[int] | None = Field(
        None, min_length=1, description="Teacher layers (1-based) the student layers attend over; default: all.",
    )


def layer_attention(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """α ``(N, J)``: each sequence's softmax over the teacher layers ``teacher`` ``(N, J, D)`` of
    the scaled dot product with the student layer ``student`` ``(N, D)`` (already projected)."""
    scores = torch.einsum("nd,njd->nj", student.float(), teacher.float()) / math.sqrt(teacher.shape[-1])
    return scores.softmax(-1)


class UniversalKD(Method):
    name = "universal_kd"
    description = "Universal-KD: pseudo-classifiers on intermediate layers, attention over teacher layers, KL in output space"
    requires = frozenset({"layer_states"})
    num_teachers = (1, 1)
    options_schema = UniversalKDOptions

    options: UniversalKDOptions

    def prepare(self, context: StageContext) -> None:
        """Size the pseudo-classifiers (and the projection) by the models' depths and widths."""
        student, teacher = (probe(self.task, m, context.max_tokens) for m in (self.student, self.teacher))
        classes = student.output.logits.shape[-1]
        depth_s, depth_t = len(student.hidden) - 1, len(teacher.hidden) - 1
        self.student_layers = self.options.student_layers or list(range(1, depth_s)) or [depth_s]
        self.teacher_layers = self.options.teacher_layers or list(range(1, depth_t + 1))
        check_layers(self.student_layers, depth_s, "student", "universal_kd.student_layers")
        check_layers(self.teacher_layers, depth_t, "teacher", "universal_kd.teacher_layers")
        width_s, width_t = student.hidden[-1].shape[-1], teacher.hidden[-1].shape[-1]
        self.modules["student_heads"] = torch.nn.ModuleList(torch.nn.Linear(width_s, classes) for _ in self.student_layers)
        self.modules["teacher_heads"] = torch.nn.ModuleList(torch.nn.Linear(width_t, classes) for _ in self.teacher_layers)
        self.modules["query"] = torch.nn.Identity() if width_s == width_t else torch.nn.Linear(width_s, width_t, bias=False)

    def layer_terms(self, student: LayerStates, teacher: LayerStates) -> tuple[torch.Tensor, torch.Tensor]:
        """Σ_i L_i, and the teacher pseudo-classifiers' CE on the gold labels (known ones only)."""
        h_t = torch.stack([teacher.pooled(j) for j in self.teacher_layers], 1)  # (N, J, D_T)
        z_t = torch.stack([head(h_t[:, k]) for k, head in enumerate(self.modules["teacher_heads"])], 1)  # (N, J, C)
        gold = teacher.output.mask[:, 0]
        teacher_ce = F.cross_entropy(
            z_t[gold].flatten(0, 1).float(), teacher.output.targets[gold, 0].repeat_interleave(len(self.teacher_layers)), reduction="sum",
        )
        total = z_t.new_zeros(())
        for i, head in zip(self.student_layers, self.modules["student_heads"]):
            h_s = student.pooled(i)
            alpha = layer_attention(self.modules["query"](h_s), h_t)
            target = torch.einsum("nj,njc->nc", alpha, z_t.detach().float())
            total = total + token_kl(per_sequence(head(h_s)), target.unsqueeze(1), self.options.temperature)
        return total, teacher_ce

    def loss(self, batch: Any, step: int) -> LossOutput:
        o = self.options
        student = self.task.layer_states(self.student, batch)
        # no_grad, not inference mode: the teacher's states train its pseudo-classifiers, whose
        # outputs its mask selects (``z_t[gold]``), and autograd saves that mask for backward
        with teacher_pass(saved_for_backward=True):
            teacher = self.task.layer_states(self.teacher, batch)
        ce, n = self.task.nll(student.output, self.label_smoothing)
        kd = token_kl(student.output, teacher.output.logits, o.temperature)
        layers, teacher_ce = self.layer_terms(student, teacher)
        total = ce + o.alpha_kd * kd + o.beta * layers + teacher_ce
        return LossOutput(total, n, {"nll": ce.item(), "kd": kd.item(), "layers": layers.item(), "teacher_heads": teacher_ce.item()})


@hookimpl
def register_methods(register):
    register(UniversalKD)
