"""The ``summarization`` task adapter: documents in, summaries out, ROUGE with ``rouge-score``.

Models, batches, noise and beam search are the encoder-decoder tasks' shared ones
(``seqkd.tasks.seq2seq``). What is this task's own: its readers, truncating long documents rather
than dropping them, batching by document length, summary-length and trigram-blocking defaults,
and ROUGE.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

from rouge_score import rouge_scorer

from seqkd import distributed
from seqkd.errors import DataError
from seqkd.tasks.seq2seq.adapter import SPLITS, Seq2SeqTask
from seqkd.tasks.seq2seq.batching import Example
from seqkd.tasks.seq2seq.corpus import Pair, read_parallel
from seqkd.tasks.seq2seq.vocab import BOS, EOS
from seqkd.tasks.summarization.config import SummarizationConfig, SummarizationEvaluation, SummarizationGeneration
from seqkd.tasks.summarization.corpus import read_jsonl, read_xsum

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def document_rouge(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """ROUGE-1/2/L F1 (× 100) of each prediction against its reference: ``rouge-score`` with Porter stemming."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    return [
        {kind: 100 * score.fmeasure for kind, score in scorer.score(reference, prediction).items()}
        for prediction, reference in zip(predictions, references, strict=True)
    ]


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (× 100) over the documents, rounded to 2 places."""
    scores = document_rouge(predictions, references)
    return {kind: round(sum(s[kind] for s in scores) / max(len(scores), 1), 2) for kind in ROUGE_TYPES}


class SummarizationTask(Seq2SeqTask):
    name: ClassVar[str] = "summarization"
    description: ClassVar[str] = "Encoder-decoder Transformer summarization (fairseq2), ROUGE-1/2/L with rouge-score"
    config_schema = SummarizationConfig
    evaluation_schema = SummarizationEvaluation
    generation_schema = SummarizationGeneration
    headline_metrics: ClassVar[dict[str, str]] = {"rouge1": "R-1", "rouge2": "R-2", "rougeL": "R-L"}
    batch_by: ClassVar[str] = "source"  # documents are the long side
    token_store: ClassVar[bool] = True

    config: SummarizationConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
        self._cut: dict[str, list[bool]] = {}  # per split: which documents max_source_len cuts

    @property
    def max_source_len(self) -> int:
        return self.config.max_source_len

    @property
    def max_target_len(self) -> int:
        return self.config.max_target_len

    # -- data ---------------------------------------------------------------------------------

    def data_files(self) -> list[Path]:
        data = self.config.data
        if data.format == "xsum":
            return [self.resolve(data.split_file), *sorted(self.resolve(data.corpus).glob("*.summary"))]
        if data.format == "lines":
            return [self.resolve(f"{getattr(data, s)}.{side}") for s in SPLITS for side in ("source", "target")]
        return [self.resolve(n) for n in ([data.corpus] if data.corpus else [data.train, data.valid, data.test])]

    def read_splits(self) -> dict[str, list[Pair]]:
        data = self.config.data
        if data.format == "xsum":
            pairs = read_xsum(self.resolve(data.corpus), self.resolve(data.split_file))
        elif data.format == "lines":
            pairs = {s: list(read_parallel(*self.data_files()[2 * i : 2 * i + 2])) for i, s in enumerate(SPLITS)}
        elif data.corpus:
            pairs = {s: [] for s in SPLITS}
            for split, pair in read_jsonl(self.resolve(data.corpus), data.document_field, data.summary_field, data.split_field):
                pairs[split].append(pair)
        else:
            pairs = {
                s: [pair for _, pair in read_jsonl(self.resolve(getattr(data, s)), data.document_field, data.summary_field)]
                for s in SPLITS
            }
        if data.max_train_pairs is not None:
            pairs["train"] = pairs["train"][: data.max_train_pairs]
        return pairs

    def iter_pairs(self, splits: Sequence[str] = SPLITS) -> Iterator[tuple[str, Pair]]:
        """``read_splits`` as a stream (JSON lines and line files; the XSum release is read whole)."""
        data = self.config.data
        if data.format == "xsum":
            yield from super().iter_pairs(splits)
            return
        cap, trained = data.max_train_pairs, 0
        if data.format == "lines":
            files = self.data_files()
            stream = ((s, pair) for i, s in enumerate(SPLITS) if s in splits for pair in read_parallel(*files[2 * i : 2 * i + 2]))
        elif data.corpus:
            stream = read_jsonl(self.resolve(data.corpus), data.document_field, data.summary_field, data.split_field)
        else:
            stream = (
                (s, pair) for s in SPLITS if s in splits
                for _, pair in read_jsonl(self.resolve(getattr(data, s)), data.document_field, data.summary_field)
            )
        for split, pair in stream:
            if split == "train":
                if cap is not None and trained >= cap:
                    continue
                trained += 1
            if split in splits:
                yield split, pair

    def encode_chunk(self, pairs: list[Pair]) -> tuple[list[list[int]], list[list[int]], int]:
        """The shared chunk encoding, counting the documents ``max_source_len`` cuts."""
        cut = self.config.max_source_len - 1
        ids = self.vocab.encode([p.source for p in pairs])
        targets = [[BOS] + t + [EOS] for t in self.vocab.encode([p.target for p in pairs])]
        return [d[:cut] + [EOS] for d in ids], targets, sum(len(d) > cut for d in ids)

    def encode_sources(self, texts: list[str]) -> list[list[int]]:
        """Token ids + EOS, documents cut to ``max_source_len`` tokens."""
        cut = self.config.max_source_len - 1
        return [ids[:cut] + [EOS] for ids in self.vocab.encode(texts)]

    def _examples(self, split: str) -> list[Example]:
        """The shared encoding, and one line saying how many of the split's documents were cut."""
        fresh = split not in self._encoded
        examples = super()._examples(split)
        if fresh and distributed.is_main() and (long := self.truncated(split)):
            total = self.store.info(split)["pairs"] if self._uses_store else len(self.pairs()[split])
            print(
                f"summarization: {long:,} of {total:,} {split} documents are longer than "
                f"max_source_len={self.config.max_source_len} tokens and were truncated", file=sys.stderr, flush=True,
            )
        return examples

    def truncated(self, split: str, count: int | None = None) -> int:
        """How many of the first ``count`` (default: all) documents of ``split`` are cut to ``max_source_len``."""
        if count is None and self._uses_store:
            return self.store.info(split)["truncated"]
        if split not in self._cut:
            cut = self.config.max_source_len - 1
            self._cut[split] = [len(ids) > cut for ids in self.vocab.encode([p.source for p in self.split_pairs(split)])]
        return sum(self._cut[split][:count])

    # -- metrics ------------------------------------------------------------------------------

    def score(self, split: str, predictions: list[str], options: SummarizationEvaluation) -> dict[str, Any]:
        references = self.references(split, len(predictions))
        if not references:
            raise DataError(f"no {split} summaries to score")
        report: dict[str, Any] = {"split": split, "documents": len(predictions), "beam_size": options.beam_size}
        report.update(rouge(predictions, references))
        report["truncated_documents"] = self.truncated(split, len(predictions))
        report["rouge_signature"] = f"rouge-score {version('rouge-score')}|F1|stemmer:porter|tokenizer:default"
        return report

    @classmethod
    def report_notes(cls, metrics: dict[str, Any]) -> list[str]:
        return [f"ROUGE: {metrics['rouge_signature']}"] if "rouge_signature" in metrics else []

    def sentence_score(self, hypothesis: str, reference: str) -> float:
        """The mean of ROUGE-1, -2 and -L F1 against the reference (Seq-Inter's choice)."""
        scores = self._scorer.score(reference, hypothesis)
        return 100 * sum(scores[kind].fmeasure for kind in ROUGE_TYPES) / len(ROUGE_TYPES)
