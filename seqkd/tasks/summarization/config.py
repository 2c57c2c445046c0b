"""Recipe sections of the ``summarization`` task: ``task:`` and ``evaluation:``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from seqkd.tasks.seq2seq.config import BeamSettings, EngineChoice, EvaluationScope, VocabularyConfig


class SummarizationData(BaseModel):
    """Where the documents and summaries live. Paths are relative to the recipe file.

    - ``jsonl``: one JSON object a line (``.gz`` read transparently) with a document and a summary
      field; either one ``corpus`` whose ``split_field`` says train/valid/test, or three files.
    - ``lines``: CNN/DailyMail-style line-aligned files; ``train: data/train`` reads
      ``data/train.source`` and ``data/train.target``.
    - ``xsum``: the XSum release, a folder of ``<id>.summary`` files (``corpus``) and the JSON file
      of split ids (``split_file``); the ``[SN]FIRST-SENTENCE[SN]`` section is the summary and
      ``[SN]RESTBODY[SN]`` the document.
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["jsonl", "lines", "xsum"] = Field("jsonl", description="JSON lines, .source/.target line files, or the XSum release.")
    corpus: str | None = Field(None, description="jsonl: one file with a split field; xsum: the folder of .summary files.")
    train: str | None = Field(None, description="Training file (lines: prefix).")
    valid: str | None = Field(None, description="Validation file (lines: prefix).")
    test: str | None = Field(None, description="Test file (lines: prefix).")
    document_field: str = Field("document", description="jsonl: the field holding the document.")
    summary_field: str = Field("summary", description="jsonl: the field holding the summary.")
    split_field: str = Field("split", description="jsonl with `corpus`: the field naming the split (train, valid or test).")
    split_file: str | None = Field(None, description="xsum: the JSON file of split ids (XSum-TRAINING-DEV-TEST-SPLIT-90-5-5.json).")
    max_train_pairs: int | None = Field(None, ge=1, description="Use only the first N training pairs.")

    @model_validator(mode="after")
    def _one_layout(self) -> "SummarizationData":
        explicit = [self.train, self.valid, self.test]
        if self.format == "xsum":
            if self.corpus is None or self.split_file is None or any(p is not None for p in explicit):
                raise ValueError("format xsum takes `corpus` (the folder of .summary files) and `split_file`")
        elif self.format == "lines":
            if None in explicit or self.corpus is not None:
                raise ValueError("format lines takes the prefixes `train`, `valid` and `test`")
        elif self.corpus is None and None in explicit:
            raise ValueError("give either `corpus` (with a split field) or all three of `train`, `valid` and `test`")
        elif self.corpus is not None and any(p is not None for p in explicit):
            raise ValueError("give either `corpus` or `train`/`valid`/`test`, not both")
        return self


class SummarizationConfig(VocabularyConfig):
    """The ``task:`` section of a summarization recipe."""

    name: Literal["summarization"] = "summarization"
    data: SummarizationData
    max_source_len: int = Field(400, ge=8, description="Longer documents are truncated to this many tokens (counted and reported).")
    max_target_len: int = Field(64, ge=4, description="Training pairs whose summary is longer (in tokens) are left out.")


class SummarizationGeneration(BeamSettings, EngineChoice):
    """Beam search settings for summaries: an absolute length range and trigram blocking."""

    len_penalty: float = Field(1.0, description="Length penalty of the beam search.")
    min_len: int = Field(3, ge=1, description="Summaries have at least this many tokens.")
    max_len_a: float = Field(0.0, ge=0, description="Summaries stop at a * document length + b tokens (a = 0: at most b).")
    max_len_b: int = Field(48, ge=1, description="See max_len_a.")
    no_repeat_ngram: int = Field(3, ge=0, description="Never repeat an n-gram of this many tokens (3: trigram blocking); 0 allows repeats.")


class SummarizationEvaluation(SummarizationGeneration, EvaluationScope):
    """The ``evaluation:`` section: beam search settings and what to score."""
