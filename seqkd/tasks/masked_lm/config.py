"""Recipe sections of the ``masked_lm`` task: ``task:``, each model and ``evaluation:``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MaskedLMData(BaseModel):
    """Unlabelled text. Paths are relative to the recipe file; any file may be gzipped (``.gz``).

    Plain text files hold one example (a sentence or paragraph) a line, blank lines skipped; JSONL
    files one object a line with the text in ``text_field``. Either one ``corpus`` file (JSONL)
    whose ``split_field`` says train / valid / test for each row, or a ``train`` file with optional
    ``valid`` and ``test`` files; without ``valid``, a fixed share of the training examples (chosen
    by a hash of their text, so the split never depends on file order) is held out for validation.
    """

    model_config = ConfigDict(extra="forbid")

    corpus: str | None = Field(None, description="One JSONL file with a split column (`split_field`).")
    train: str | None = Field(None, description="Training text (plain text or JSONL).")
    valid: str | None = Field(None, description="Validation text; default: `valid_fraction` of `train`, by a hash of each text.")
    test: str | None = Field(None, description="Test text (optional).")
    format: Literal["text", "jsonl"] | None = Field(None, description="File format; default: from the name (.jsonl, .jsonl.gz: JSONL; anything else: plain text).")
    text_field: str = Field("text", description="JSONL: the field of the text.")
    split_field: str = Field("split", description="`corpus` only: the field naming each row's split (train, valid or dev, test).")
    valid_fraction: float = Field(0.02, gt=0, lt=0.5, description="Without `valid`: the share of training examples held out, by a hash of their text.")
    max_train_examples: int | None = Field(None, ge=1, description="Use only the first N training examples.")

    @model_validator(mode="after")
    def _one_layout(self) -> "MaskedLMData":
        if (self.corpus is None) == (self.train is None):
            raise ValueError("give either `corpus` (one JSONL file with a split field) or `train` (with optional `valid` and `test`)")
        if self.corpus is not None and (self.valid is not None or self.test is not None):
            raise ValueError("`valid` and `test` files go with `train`; a `corpus` names each row's split in `split_field`")
        return self


class Masking(BaseModel):
    """BERT's masking: ``probability`` of the non-special tokens are chosen; of those, ``mask`` are
    replaced by ``[MASK]``, ``random`` by a random token and the rest left as they are."""

    model_config = ConfigDict(extra="forbid")

    probability: float = Field(0.15, gt=0, lt=1, description="Share of the non-special tokens chosen for prediction.")
    mask: float = Field(0.8, ge=0, le=1, description="Share of the chosen tokens replaced by [MASK].")
    random: float = Field(0.1, ge=0, le=1, description="Share of the chosen tokens replaced by a random token (the rest stay unchanged).")

    @model_validator(mode="after")
    def _shares(self) -> "Masking":
        if self.mask + self.random > 1 + 1e-9:
            raise ValueError(f"mask {self.mask} + random {self.random} exceed 1")
        return self


class MaskedLMConfig(BaseModel):
    """The ``task:`` section of a masked-LM recipe."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["masked_lm"] = "masked_lm"
    data: MaskedLMData
    vocab_size: int = Field(8000, ge=64, description="Sentencepiece vocabulary size, trained on the training text ([MASK] comes on top).")
    vocab_model: Literal["unigram", "bpe"] = Field("bpe", description="Sentencepiece model type (BPE, close to BERT's WordPiece, trains in seconds where unigram takes a minute on 20k paragraphs).")
    max_seq_len: int = Field(128, ge=4, description="Longest input in tokens, [CLS] and [SEP] included; longer texts are cut.")
    masking: Masking = Field(default_factory=Masking, description="Which tokens are predicted and how they are hidden.")
    min_train_examples: int = Field(10, ge=1, description="Refuse training data smaller than this.")


class MaskedLMModelConfig(BaseModel):
    """A BERT-shaped encoder (the classification task's `kind: encoder`, fairseq2 layers, post-norm)
    with a masked-LM head (dense + GELU + LayerNorm, output tied to the token embeddings)."""

    model_config = ConfigDict(extra="forbid")

    layers: int = Field(2, ge=1, description="Encoder layers.")
    dim: int = Field(128, ge=8, description="Model width.")
    heads: int = Field(4, ge=1, description="Attention heads; must divide dim.")
    ffn_dim: int = Field(512, ge=1, description="Feed-forward inner width.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on embeddings and layers.")

    @model_validator(mode="after")
    def _check(self) -> "MaskedLMModelConfig":
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        return self

    @property
    def num_layers(self) -> int:
        return self.layers


class MaskedLMEvaluation(BaseModel):
    """The ``evaluation:`` section: masked-token accuracy and perplexity, with the masks of every
    example fixed (drawn from its split and index), so every model is scored on the same masks."""

    model_config = ConfigDict(extra="forbid")

    split: Literal["valid", "test"] = Field("valid", description="Which split the report scores (`test` needs test data).")
    batch_size: int = Field(64, ge=1, description="Texts scored together.")
    max_sentences: int | None = Field(None, ge=1, description="Score only the first N examples.")
