"""Settings every encoder-decoder task shares: beam search, input noise and the vocabulary.

Each task sets its own defaults by subclassing (a summary has a minimum length and trigram
blocking; a translation grows with its source), so recipes of both tasks use the same names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from seqkd.hashing import AddedFields


class BeamSettings(BaseModel):
    """Beam search settings: the evaluation's, and those of methods that decode with a teacher."""

    model_config = ConfigDict(extra="forbid")

    beam_size: int = Field(4, ge=1, description="Beam width.")
    len_penalty: float = Field(1.0, description="Length penalty of the beam search.")
    min_len: int = Field(1, ge=1, description="Hypotheses have at least this many tokens.")
    max_len_a: float = Field(1.2, ge=0, description="Hypotheses stop at a * source length + b tokens.")
    max_len_b: int = Field(10, ge=1, description="See max_len_a.")
    no_repeat_ngram: int = Field(0, ge=0, description="Never repeat an n-gram of this many tokens (3: trigram blocking); 0 allows repeats.")
    batch_size: int = Field(64, ge=1, description="Sentences decoded together.")


class EngineChoice(AddedFields):
    """Which engine runs the beam search of a task whose models CTranslate2 can express."""

    added_fields = ("engine",)  # left out of stage and cache keys at pytorch: runs from before it stay valid

    engine: Literal["pytorch", "ctranslate2", "ctranslate2_int8"] = Field(
        "pytorch",
        description="Run the beam search with seqkd's fairseq2 generator, or on the model converted to CTranslate2 "
        "(float32 weights: fairseq2's best hypotheses, bar those cut at the length limit, 2-3x as fast on a CPU; "
        "int8: rounded weights, faster still). See docs/deployment.md.",
    )


class Seq2SeqNoise(BaseModel):
    """Noise ``perturb`` applies to a source, in this order: sentences dropped, sentences moved,
    then tokens dropped, replaced and moved (Lample et al., 2018; Liu et al., 2021).

    Tokens are sentencepiece pieces. A sentence ends at a piece made only of ``.``, ``!`` or ``?``
    (the source's final EOS always stays last). "Moved" is a local shuffle: an item moves fewer
    than ``window`` places. A replacement is drawn from the ``neighbours`` nearest tokens in the
    embedding space of the model the caller names (``noise_neighbours``), or uniformly from
    the vocabulary.
    """

    model_config = ConfigDict(extra="forbid")

    word_drop: float = Field(0.1, ge=0, le=1, description="Probability of deleting each source token (one always stays).")
    word_replace: float = Field(0.0, ge=0, le=1, description="Probability of replacing each source token.")
    replace_with: Literal["neighbours", "random"] = Field(
        "neighbours", description="Replace by one of the nearest tokens in a model's embedding space, or by any token."
    )
    neighbours: int = Field(10, ge=1, description="How many nearest tokens a replacement is drawn from.")
    word_shuffle: int = Field(3, ge=0, description="Local token shuffle window: tokens move fewer than this many places; 0 or 1 keeps the order.")
    sentence_drop: float = Field(0.0, ge=0, le=1, description="Probability of deleting each sentence (one always stays).")
    sentence_shuffle: int = Field(0, ge=0, description="Local sentence shuffle window; 0 or 1 keeps the order.")


class VocabularyConfig(BaseModel):
    """The sentencepiece vocabulary a task trains on its training split."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(8000, ge=64, description="Joint sentencepiece vocabulary size.")
    vocab_model: Literal["unigram", "bpe"] = Field("unigram", description="Sentencepiece model type.")
    min_train_pairs: int = Field(100, ge=1, description="Refuse training data smaller than this.")


class EvaluationScope(BaseModel):
    """What an ``evaluation:`` section scores, beside the task's beam settings."""

    model_config = ConfigDict(extra="forbid")

    split: Literal["valid", "test"] = Field("test", description="Which split the report scores.")
    view: str | None = Field(None, description="Read this input view (e.g. `asr` transcripts) instead of the source text.")
    max_sentences: int | None = Field(None, ge=1, description="Score only the first N examples.")
