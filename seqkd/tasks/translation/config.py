"""Recipe sections of the ``translation`` task: ``task:`` and ``evaluation:``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from seqkd.tasks.seq2seq.config import BeamSettings, EngineChoice, EvaluationScope, VocabularyConfig


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


class TranslationConfig(VocabularyConfig):
    """The ``task:`` section of a translation recipe."""

    name: Literal["translation"] = "translation"
    source_lang: str = Field(description="Source language code, e.g. en.")
    target_lang: str = Field(description="Target language code, e.g. es.")
    data: TranslationData
    max_seq_len: int = Field(128, ge=8, description="Training pairs longer than this (in tokens) are dropped.")


class TranslationGeneration(BeamSettings, EngineChoice):
    """Beam search settings: the evaluation's, and those of methods that decode with a teacher."""


class TranslationEvaluation(TranslationGeneration, EvaluationScope):
    """The ``evaluation:`` section: beam search settings and what to score."""
