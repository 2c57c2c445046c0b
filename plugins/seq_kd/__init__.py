"""``seq_kd``: sequence-level knowledge distillation (Kim & Rush, EMNLP 2016).

The teacher's beam search over the training sources builds a distilled corpus, once, through the
teacher-output cache; the student then trains with the task's NLL on it. With ``seq_inter`` the
hypothesis kept from the teacher's n-best list is the one with the highest smoothed sentence-BLEU
(sacreBLEU) against the reference, rather than the top-scoring one.
"""

from __future__ import annotations

from typing import Any

import sacrebleu
from pydantic import BaseModel, ConfigDict, Field, model_validator

from seqkd import distributed
from seqkd.errors import DataError
from seqkd.hookspecs import hookimpl
from seqkd.method import LossOutput, Method, StageContext
from seqkd.tasks.base import BatchReader, GenerationSettings
from seqkd.teacher_outputs import build_nbest, read_nbest


class SeqKDOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beam_size: int = Field(4, ge=1, description="Teacher beam width.")
    nbest: int = Field(1, ge=1, description="Hypotheses kept per source (Seq-Inter chooses among them).")
    len_penalty: float = Field(1.0, description="Length penalty of the teacher's beam search.")
    max_len_a: float = Field(1.2, ge=0, description="Hypotheses stop at a * source length + b tokens.")
    max_len_b: int = Field(10, ge=1, description="See max_len_a.")
    batch_size: int = Field(64, ge=1, description="Sources decoded together.")
    seq_inter: bool = Field(False, description="Keep the n-best hypothesis with the best sentence-BLEU vs the reference.")
    keep_original: bool = Field(False, description="Train on the original pairs as well as the distilled ones.")

    @model_validator(mode="after")
    def _consistent(self) -> "SeqKDOptions":
        if self.nbest > self.beam_size:
            raise ValueError(f"nbest ({self.nbest}) cannot exceed beam_size ({self.beam_size})")
        if self.seq_inter and self.nbest < 2:
            raise ValueError("seq_inter chooses among n-best hypotheses: set nbest >= 2")
        return self


def seq_inter_choice(hypotheses: list[str], reference: str) -> int:
    """Index of the hypothesis with the highest smoothed sentence-BLEU; ties keep the earlier (higher-scored) one."""
    bleu = sacrebleu.metrics.BLEU(effective_order=True)
    scores = [bleu.sentence_score(h, [reference]).score for h in hypotheses]
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


class SeqKD(Method):
    name = "seq_kd"
    description = "Sequence-level KD: train on the teacher's beam-search outputs (optionally Seq-Inter)"
    requires = frozenset({"generation"})
    needs_teacher = True
    needs_same_vocabulary = True
    options_schema = SeqKDOptions

    options: SeqKDOptions
    targets: dict[int, list[int]]

    def prepare(self, context: StageContext) -> None:
        o = self.options
        settings = GenerationSettings(o.beam_size, o.nbest, o.len_penalty, o.max_len_a, o.max_len_b, o.batch_size)
        artifact = build_nbest(self.task, self.teacher, context, settings, shard_size=1024)
        n = artifact.num_items
        references = self.task.target_texts("train", 0, n) if o.seq_inter else None
        self.targets = {}
        for item in range(n):
            hyps = [tokens for tokens, _ in read_nbest(artifact, item) if tokens]
            if not hyps:
                continue
            pick = seq_inter_choice([self.task.detokenize(h) for h in hyps], references[item]) if references else 0
            self.targets[item] = hyps[pick]
        if not self.targets:
            raise DataError(f"the teacher produced an empty distilled corpus ({n} sources, no non-empty hypothesis)")
        context.cache_dir.mkdir(parents=True, exist_ok=True)
        distilled = context.cache_dir / "distilled.train.txt"
        if distributed.is_main():
            distilled.write_text("".join(self.task.detokenize(t) + "\n" for _, t in sorted(self.targets.items())), encoding="utf-8")
        context.log(f"distilled corpus: {len(self.targets)} of {n} sources ({distilled})")

    def train_reader(self, max_tokens: int, seed: int) -> BatchReader:
        return self.task.train_reader(max_tokens, seed, targets=self.targets, keep_original=self.options.keep_original)

    def loss(self, batch: Any) -> LossOutput:
        return self.task_loss(batch)


@hookimpl
def register_methods(register):
    register(SeqKD)
