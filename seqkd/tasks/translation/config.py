"""Recipe sections of the ``translation`` task: ``task:`` and ``evaluation:``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TranslationData(BaseModel):
    """Where the parallel data lives. Paths are relative to the recipe file.

    Either one ``corpus`` that is split deterministically (by a hash of each source sentence), or
    explicit ``train`` / ``valid`` / ``test`` files. With ``format: parallel`` a path is a prefix:
    ``data/train`` means ``data/train.<source_lang>`` and ``data/train.<target_lang>``.
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["tsv", "parallel"] = Field("tsv", description="TSV columns or two line-aligned files.")
    corpus: str | None = Field(None, description="One corpus to split into train/valid/test.")
    train: str | None = Field(None, description="Training file (or prefix).")
    valid: str | None = Field(None, description="Validation file (or prefix).")
    test: str | None = Field(None, description="Test file (or prefix).")
    source_column: int = Field(1, ge=0, description="0-based TSV column of the source text.")
    target_column: int = Field(2, ge=0, description="0-based TSV column of the target text.")
    valid_fraction: float = Field(0.02, gt=0, lt=0.5, description="Share of `corpus` held out for validation.")
    test_fraction: float = Field(0.04, gt=0, lt=0.5, description="Share of `corpus` held out for testing.")
    max_train_pairs: int | None = Field(
        None, ge=1, description="Use only the first N training pairs (after the split)."
    )

    @model_validator(mode="after")
    def _one_layout(self) -> "TranslationData":
        explicit = [self.train, self.valid, self.test]
        if self.corpus is None and None in explicit:
            raise ValueError("give either `corpus` or all three of `train`, `valid` and `test`")
        if self.corpus is not None and any(p is not None for p in explicit):
            raise ValueError("give either `corpus` or `train`/`valid`/`test`, not both")
        return self


class TranslationNoise(BaseModel):
    """Noise ``perturb`` applies to a source: each token dropped or replaced by a random one, and
    tokens moved at most ``shuffle_window - 1`` places (Lample et al., 2018)."""

    model_config = ConfigDict(extra="forbid")

    drop: float = Field(0.1, ge=0, lt=1, description="Probability of deleting each source token.")
    replace: float = Field(0.1, ge=0, lt=1, description="Probability of replacing each source token by a random one.")
    shuffle_window: int = Field(3, ge=0, description="Local shuffle: tokens move fewer than this many places; 0 or 1 keeps the order.")


class TranslationConfig(BaseModel):
    """The ``task:`` section of a translation recipe."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["translation"] = "translation"
    source_lang: str = Field(description="Source language code, e.g. en.")
    target_lang: str = Field(description="Target language code, e.g. es.")
    data: TranslationData
    vocab_size: int = Field(8000, ge=64, description="Joint sentencepiece vocabulary size.")
    vocab_model: Literal["unigram", "bpe"] = Field("unigram", description="Sentencepiece model type.")
    max_seq_len: int = Field(128, ge=8, description="Training pairs longer than this (in tokens) are dropped.")
    min_train_pairs: int = Field(100, ge=1, description="Refuse training data smaller than this.")


class TranslationGeneration(BaseModel):
    """Beam search settings: the evaluation's, and those of methods that decode with a teacher."""

    model_config = ConfigDict(extra="forbid")

    beam_size: int = Field(4, ge=1, description="Beam width.")
    len_penalty: float = Field(1.0, description="Length penalty of the beam search.")
    max_len_a: float = Field(1.2, ge=0, description="Hypotheses stop at a * source length + b tokens.")
    max_len_b: int = Field(10, ge=1, description="See max_len_a.")
    batch_size: int = Field(64, ge=1, description="Sentences decoded together.")


class TranslationEvaluation(TranslationGeneration):
    """The ``evaluation:`` section: beam search settings and what to score."""

    split: Literal["valid", "test"] = Field("test", description="Which split the report scores.")
    view: str | None = Field(None, description="Translate this input view (e.g. `asr` transcripts) instead of the source text.")
    max_sentences: int | None = Field(None, ge=1, description="Score only the first N sentences.")
