"""``muka``: knowledge amalgamation with model uncertainty (Li et al., arXiv 2112.07327; MUKI).

N teachers, each trained on its own, disjoint part of the labels, teach one student over their
union, without gold labels. Each teacher runs K times with its dropout on (Monte-Carlo dropout);
its averaged distribution p̄_t over its own labels gives its uncertainty u_t = H(p̄_t) / log|C_t|
and score s_t = 1 − u_t. Each p̄_t is zero-padded into its slice of the union label space; the
target q is the most certain teacher's distribution (``combine: hard``) or Σ_t softmax(s/τ)_t·p̄_t
(``combine: soft``, τ = ``score_temperature``), and each example weighs w = |s(1) − s(2)| + 1e-6,
the margin between the two best scores: L = Σ_b w_b·KL(q_b ‖ p_S,b), averaged over the batch.
``combine: vanilla`` is the paper's baseline: q = the padded teacher distributions summed and
renormalised, every example weighing 1.

Teachers are read from their own model files, whatever their label sets (``same_output_space =
False``); a teacher label the student's task does not have, or a label two teachers share, is
refused. With ``teacher_source: cache`` the K passes run once per training example, before
training, into a teacher-output cache (they are most of the cost), drawn from a generator seeded
by ``mc_seed``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from seqkd.cache import build_artifact
from seqkd.errors import SeqkdError
from seqkd.hookspecs import hookimpl
from seqkd.method import LossOutput, Method, StageContext, teacher_pass
from seqkd.teacher_outputs import SHARD_SIZE, cache_parts, open_or_build, progress_log


class MukaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    combine: Literal["soft", "hard", "vanilla"] = Field(
        "soft", description="soft: score-weighted teacher mixture; hard: the most certain teacher's distribution; vanilla: all teachers' distributions renormalised, no weights (the baseline)."
    )
    mc_passes: int = Field(16, ge=1, description="Monte-Carlo dropout passes per teacher (K).")
    score_temperature: float = Field(0.2, gt=0.0, description="τ of softmax(s/τ) over the teachers' scores (combine: soft).")
    margin_weight: bool = Field(True, description="Weigh each example by the margin between its two best teacher scores (not with vanilla).")
    teacher_source: Literal["online", "cache"] = Field("cache", description="Run the MC passes every step, or once into a teacher-output cache.")
    mc_seed: int = Field(0, description="Seeds the cached MC-dropout passes.")


def label_slices(student_labels: list[str], teacher_labels: list[list[str]], sources: list[str]) -> list[torch.Tensor]:
    """Each teacher's label indices in the student's label space (refusing unknown or shared labels)."""
    index = {label: i for i, label in enumerate(student_labels)}
    seen: dict[str, str] = {}
    slices = []
    for labels, source in zip(teacher_labels, sources):
        unknown = [label for label in labels if label not in index]
        if unknown:
            raise SeqkdError(f"muka: teacher {source!r} predicts label(s) {', '.join(unknown[:5])} that the student's task does not have")
        for label in labels:
            if label in seen:
                raise SeqkdError(f"muka: label {label!r} belongs to teachers {seen[label]!r} and {source!r}; the teachers' label sets must be disjoint")
            seen[label] = source
        slices.append(torch.tensor([index[label] for label in labels]))
    return slices


def padded(probs: list[torch.Tensor], slices: list[torch.Tensor], size: int) -> torch.Tensor:
    """``(B, T, size)``: teacher t's distribution (B, C_t) in its slice, zeros elsewhere."""
    out = probs[0].new_zeros(probs[0].shape[0], len(probs), size)
    for t, (p, where) in enumerate(zip(probs, slices)):
        out[:, t, where.to(p.device)] = p
    return out


def scores(padded_probs: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``(B, T)``: s_t = 1 − H(p̄_t) / log|C_t|."""
    p = padded_probs.clamp(min=1e-12)
    entropy = -(padded_probs * p.log()).sum(-1)
    return 1.0 - entropy / torch.tensor([math.log(n) for n in sizes], device=p.device)


def targets(padded_probs: torch.Tensor, sizes: list[int], options: MukaOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """The target distribution q ``(B, C)`` and the example weights w ``(B,)``."""
    if options.combine == "vanilla":
        q = padded_probs.sum(1)
        return q / q.sum(-1, keepdim=True), torch.ones(q.shape[0], device=q.device)
    s = scores(padded_probs, sizes)
    if options.combine == "hard":
        q = padded_probs[torch.arange(len(s)), s.argmax(1)]
    else:
        q = (torch.softmax(s / options.score_temperature, dim=1).unsqueeze(-1) * padded_probs).sum(1)
    if not options.margin_weight:
        return q, torch.ones(q.shape[0], device=q.device)
    top = s.topk(2, dim=1).values
    return q, (top[:, 0] - top[:, 1]).abs() + 1e-6


class Muka(Method):
    name = "muka"
    description = "MUKA: amalgamate teachers of disjoint label sets by MC-dropout uncertainty, no gold labels"
    requires = frozenset({"token_logits"})
    num_teachers = (2, None)
    same_output_space = False
    options_schema = MukaOptions

    options: MukaOptions
    cached: Any = None

    def prepare(self, context: StageContext) -> None:
        student_labels = self.task.output_space().get("labels")
        if student_labels is None:
            raise SeqkdError(f"muka amalgamates label sets; task {self.task.name!r} records none in its models (use a classification task)")
        self.sizes = [len(t.output_space["labels"]) for t in self.teachers]
        self.slices = label_slices(student_labels, [t.output_space["labels"] for t in self.teachers], [t.source for t in self.teachers])
        self.num_labels = len(student_labels)
        if self.options.teacher_source == "cache":
            self.cached = self._build_cache(context)

    def mc_probs(self, batch: Any) -> torch.Tensor:
        """``(B, T, C)``: each teacher's distribution averaged over ``mc_passes`` dropout passes, padded."""
        means = []
        for teacher in self.teachers:
            model = teacher.model
            was_training = model.training
            model.train()
            with teacher_pass():
                passes = [torch.softmax(self.task.forward(model, batch).logits[:, 0].float(), -1) for _ in range(self.options.mc_passes)]
            model.train(was_training)
            means.append(torch.stack(passes).mean(0))  # out of inference mode: an ordinary tensor, which the loss may save
        return padded(means, self.slices, self.num_labels)

    def _build_cache(self, context: StageContext) -> Any:
        folder = context.cache_dir / "mc"
        settings = {"kind": "muka-mc", "passes": self.options.mc_passes, "seed": self.options.mc_seed}
        parts = cache_parts(self.task, context, settings)

        def make_shard(start: int, stop: int) -> dict[str, np.ndarray]:
            rows: dict[int, torch.Tensor] = {}
            with torch.random.fork_rng():
                torch.manual_seed(self.options.mc_seed * 1_000_003 + start)
                for batch in self.task.indexed_batches("train", start, stop, context.max_tokens):
                    probs = self.mc_probs(batch.to(context.device)).cpu()
                    rows.update(zip(batch.indices.tolist(), probs))
            return {"probs": torch.stack([rows[i] for i in range(start, stop)]).numpy().astype(np.float32)}

        return open_or_build(folder, "muka-mc", parts, context, lambda: build_artifact(
            folder, "muka-mc", parts, self.task.num_examples("train"), SHARD_SIZE, make_shard,
            meta=settings, progress=progress_log(context, "teachers' MC-dropout passes"),
        ))

    def _teacher_probs(self, batch: Any, device: torch.device) -> torch.Tensor:
        if self.cached is None:
            return self.mc_probs(batch)
        rows = []
        for item in batch.indices.tolist():
            shard = self.cached.shard_of(item)
            rows.append(torch.tensor(shard.arrays["probs"][item - shard.start]))
        return torch.stack(rows).to(device)

    def loss(self, batch: Any, step: int) -> LossOutput:
        output = self.student_forward(batch)
        log_p = torch.log_softmax(output.logits[:, 0].float(), -1)
        q, w = targets(self._teacher_probs(batch, log_p.device), self.sizes, self.options)
        kl = (q * (q.clamp(min=1e-12).log() - log_p)).sum(-1)
        return LossOutput((w * kl).sum(), len(w), {"kl": kl.sum().item(), "weight": w.sum().item()})


@hookimpl
def register_methods(register):
    register(Muka)
