"""``seq_kd``: sequence-level knowledge distillation (Kim & Rush, EMNLP 2016).

The teacher's beam search over the training sources builds a distilled corpus, once, through the
teacher-output cache; the student then trains with the task's NLL on it. With ``seq_inter`` the
hypothesis kept from the teacher's n-best list is the one with the best sentence score against the
reference (the task's ``sentence_score``: smoothed sentence-BLEU for translation), rather than the
top-scoring one. The teacher decodes with the task's own generation settings, given as options.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from seqkd.errors import DataError
from seqkd.hookspecs import hookimpl
from seqkd.method import LossOutput, Method, StageContext
from seqkd.tasks.base import BatchReader, TaskAdapter
from seqkd.teacher_outputs import build_nbest, read_nbest


class SeqKDOptions(BaseModel):
    """The method's own options; ``options_model`` adds the task's generation settings (for
    translation: beam_size, len_penalty, max_len_a, max_len_b, batch_size) beside them."""

    model_config = ConfigDict(extra="forbid")

    nbest: int = Field(1, ge=1, description="Hypotheses kept per source (Seq-Inter chooses among them).")
    seq_inter: bool = Field(False, description="Keep the n-best hypothesis with the best sentence score (the task's, e.g. sentence-BLEU) vs the reference.")
    keep_original: bool = Field(False, description="Train on the original pairs as well as the distilled ones.")

    @model_validator(mode="after")
    def _consistent(self) -> "SeqKDOptions":
        beam = getattr(self, "beam_size", None)
        if beam is not None and self.nbest > beam:
            raise ValueError(f"nbest ({self.nbest}) cannot exceed beam_size ({beam})")
        if self.seq_inter and self.nbest < 2:
            raise ValueError("seq_inter chooses among n-best hypotheses: set nbest >= 2")
        return self


def with_generation(options: type[BaseModel], task: type[TaskAdapter]) -> type[BaseModel]:
    """``options`` plus the task's generation settings as flat fields (one ``options:`` section)."""
    if task.generation_schema is None:
        return options
    return create_model(f"{options.__name__}[{task.name}]", __base__=(options, task.generation_schema))


def generation_settings(options: BaseModel, task: TaskAdapter) -> BaseModel:
    """The task's generation settings out of a method's options (validated, defaults filled in)."""
    schema = task.generation_schema
    return schema.model_validate(options.model_dump(include=set(schema.model_fields)))


class SeqKD(Method):
    name = "seq_kd"
    description = "Sequence-level KD: train on the teacher's beam-search outputs (optionally Seq-Inter)"
    requires = frozenset({"generation"})
    num_teachers = (1, 1)
    options_schema = SeqKDOptions

    targets: dict[int, list[int]]

    @classmethod
    def options_model(cls, task: type[TaskAdapter]) -> type[BaseModel]:
        return with_generation(cls.options_schema, task)

    def prepare(self, context: StageContext) -> None:
        o = self.options
        settings = generation_settings(o, self.task)
        artifact = build_nbest(self.task, self.teachers[0], context, settings, o.nbest, shard_size=1024)
        n = artifact.num_items
        references = self.task.target_texts("train", 0, n) if o.seq_inter else None
        self.targets = {}
        for item in range(n):
            hyps = [tokens for tokens, _ in read_nbest(artifact, item) if tokens]
            if not hyps:
                continue
            pick = seq_inter_choice(self.task, [self.task.detokenize(h) for h in hyps], references[item]) if references else 0
            self.targets[item] = hyps[pick]
        if not self.targets:
            raise DataError(f"the teacher produced an empty distilled corpus ({n} sources, no non-empty hypothesis)")
        distilled = context.cache_dir / "distilled.train.txt"
        context.write_text(distilled, "".join(self.task.detokenize(t) + "\n" for _, t in sorted(self.targets.items())))
        context.log(f"distilled corpus: {len(self.targets)} of {n} sources ({distilled})")

    def train_reader(self, max_tokens: int, seed: int) -> BatchReader:
        sets = [None, self.targets] if self.options.keep_original else [self.targets]
        return self.task.train_reader(max_tokens, seed, sets)

    def loss(self, batch: Any, step: int) -> LossOutput:
        return self.task_loss(batch)


def seq_inter_choice(task: TaskAdapter, hypotheses: list[str], reference: str) -> int:
    """Index of the hypothesis with the highest sentence score; ties keep the earlier (higher-scored) one."""
    scores = [task.sentence_score(h, reference) for h in hypotheses]
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


@hookimpl
def register_methods(register):
    register(SeqKD)
