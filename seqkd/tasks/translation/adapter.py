"""The ``translation`` task adapter: parallel text in, BLEU/chrF out.

Models, batches, noise and beam search are the encoder-decoder tasks' shared ones
(``seqkd.tasks.seq2seq``); this module reads parallel corpora and scores with sacreBLEU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import sacrebleu

from seqkd.tasks.seq2seq.adapter import SPLITS, Seq2SeqTask
from seqkd.tasks.seq2seq.corpus import Pair, read_parallel
from seqkd.tasks.translation.config import TranslationConfig, TranslationEvaluation, TranslationGeneration
from seqkd.tasks.translation.corpus import read_tsv, split_of


class TranslationTask(Seq2SeqTask):
    name: ClassVar[str] = "translation"
    description: ClassVar[str] = "Encoder-decoder Transformer translation (fairseq2), BLEU/chrF with sacreBLEU"
    config_schema = TranslationConfig
    evaluation_schema = TranslationEvaluation
    generation_schema = TranslationGeneration
    headline_metrics: ClassVar[dict[str, str]] = {"bleu": "BLEU", "chrf": "chrF"}
    token_store: ClassVar[bool] = True

    config: TranslationConfig

    @property
    def max_source_len(self) -> int:
        return self.config.max_seq_len

    @property
    def max_target_len(self) -> int:
        return self.config.max_seq_len

    def data_files(self) -> list[Path]:
        data, cfg = self.config.data, self.config
        names = [data.corpus] if data.corpus else [data.train, data.valid, data.test]
        if data.format == "tsv":
            return [self.resolve(n) for n in names if n]
        return [self.resolve(f"{n}.{lang}") for n in names if n for lang in (cfg.source_lang, cfg.target_lang)]

    def _read(self, name: str) -> list[Pair]:
        return list(self._stream(name))

    def _stream(self, name: str) -> Iterator[Pair]:
        data, cfg = self.config.data, self.config
        if data.format == "tsv":
            return read_tsv(self.resolve(name), data.source_column, data.target_column)
        return read_parallel(self.resolve(f"{name}.{cfg.source_lang}"), self.resolve(f"{name}.{cfg.target_lang}"))

    def iter_pairs(self, splits: Sequence[str] = SPLITS) -> Iterator[tuple[str, Pair]]:
        """``read_splits`` as a stream: the pairs of ``splits`` in file order, one line at a time."""
        data = self.config.data
        cap = data.max_train_pairs
        if not data.corpus:
            for split in splits:
                for n, pair in enumerate(self._stream(getattr(data, split))):
                    if split == "train" and cap is not None and n >= cap:
                        break
                    yield split, pair
            return
        trained = 0
        for pair in self._stream(data.corpus):
            split = split_of(pair.source, data.valid_fraction, data.test_fraction)
            if split == "train":
                if cap is not None and trained >= cap:
                    if tuple(splits) == ("train",):
                        return
                    continue
                trained += 1
            if split in splits:
                yield split, pair

    def read_splits(self) -> dict[str, list[Pair]]:
        """One corpus split by a hash of each source, or three files; training pairs capped by ``max_train_pairs``."""
        data = self.config.data
        if data.corpus:
            pairs: dict[str, list[Pair]] = {s: [] for s in SPLITS}
            for pair in self._read(data.corpus):
                pairs[split_of(pair.source, data.valid_fraction, data.test_fraction)].append(pair)
        else:
            pairs = {s: self._read(getattr(data, s)) for s in SPLITS}
        if data.max_train_pairs is not None:
            pairs["train"] = pairs["train"][: data.max_train_pairs]
        return pairs

    def score(self, split: str, predictions: list[str], options: TranslationEvaluation) -> dict[str, Any]:
        """Corpus BLEU and chrF with their sacreBLEU signatures."""
        references = self.references(split, len(predictions))
        bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
        return {
            "split": split, "sentences": len(predictions), "beam_size": options.beam_size,
            "bleu": round(bleu.corpus_score(predictions, [references]).score, 2),
            "chrf": round(chrf.corpus_score(predictions, [references]).score, 2),
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
        }

    @classmethod
    def report_notes(cls, metrics: dict[str, Any]) -> list[str]:
        return [f"BLEU: {metrics['bleu_signature']}"] if "bleu_signature" in metrics else []

    def sentence_score(self, hypothesis: str, reference: str) -> float:
        """Smoothed sentence-BLEU (sacreBLEU, effective order)."""
        return sacrebleu.metrics.BLEU(effective_order=True).sentence_score(hypothesis, [reference]).score
