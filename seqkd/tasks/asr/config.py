"""Recipe sections of the ``asr`` task: ``task:``, ``evaluation:`` and model configs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from seqkd.tasks.asr.synthesize import SynthesisConfig
from seqkd.tasks.seq2seq.config import BeamSettings, EvaluationScope, VocabularyConfig


class ASRData(BaseModel):
    """Where the utterances live. Paths are relative to the recipe file.

    - ``manifest``: a seqkd speech manifest (``manifest.tsv``: ``id``, ``split``, ``audio`` (a wav
      path relative to the manifest), ``samples``, ``sha256``, ..., ``text``), as
      ``seqkd speech-data`` writes it. With ``synthesize:``, a missing manifest is built first.
    - ``mustc``: the MuST-C release, e.g. ``mustc: data/MUSTC_v1.0`` with ``language: es`` reads
      ``en-es/data/{train,dev,tst-COMMON}/txt/<split>.yaml`` (segment offsets and durations in the
      talks' wav files) and ``<split>.en`` (the transcripts).
    """

    model_config = ConfigDict(extra="forbid")

    manifest: str | None = Field(None, description="A seqkd speech manifest (manifest.tsv).")
    synthesize: SynthesisConfig | None = Field(
        None, description="Build the manifest's folder when it is missing, with these `seqkd speech-data` settings (docs/speech.md; `corpus` relative to the recipe).",
    )
    mustc: str | None = Field(None, description="The MuST-C root folder (holds en-<language>/).")
    language: str = Field("es", description="mustc: the target language of the release (en-<language>).")
    max_train_utterances: int | None = Field(None, ge=1, description="Use only the first N training utterances.")

    @model_validator(mode="after")
    def _one_source(self) -> "ASRData":
        if (self.manifest is None) == (self.mustc is None):
            raise ValueError("give `manifest` (a seqkd speech manifest) or `mustc` (the MuST-C root), one of them")
        if self.synthesize is not None and self.manifest is None:
            raise ValueError("`synthesize` builds a manifest: give `manifest` too")
        return self


class SpecAugment(BaseModel):
    """SpecAugment (Park et al., 2019) on training batches: frequency and time masks, no warping."""

    model_config = ConfigDict(extra="forbid")

    freq_masks: int = Field(2, ge=0, description="Frequency masks per utterance.")
    freq_width: int = Field(15, ge=0, description="Each frequency mask covers up to this many of the 80 channels.")
    time_masks: int = Field(2, ge=0, description="Time masks per utterance.")
    time_width: float = Field(0.05, ge=0, le=1, description="Each time mask covers up to this fraction of the utterance's frames.")


class ASRConfig(VocabularyConfig):
    """The ``task:`` section of a speech recognition recipe."""

    name: Literal["asr"] = "asr"
    data: ASRData
    vocab_size: int = Field(1000, ge=64, description="Sentencepiece vocabulary size, trained on the transcripts.")
    max_seconds: float = Field(20.0, gt=0, description="Longer utterances are refused, naming their file: a model reads at most this much audio.")
    max_target_len: int = Field(64, ge=4, description="Training utterances whose transcript is longer (in tokens) are left out.")
    spec_augment: SpecAugment | None = Field(None, description="Mask training features (SpecAugment); none: train on clean features.")
    ctc_weight: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Hybrid CTC/attention training: the loss is (1 - w)·NLL + w·CTC, with a CTC head on the encoder (0: attention only).",
    )


class ASRGeneration(BeamSettings):
    """Beam search settings for transcripts: the length limit grows with the audio's frames."""

    max_len_a: float = Field(0.08, ge=0, description="Transcripts stop at a * feature frames + b tokens (0.08: 8 tokens per second of audio).")
    max_len_b: int = Field(10, ge=1, description="See max_len_a.")
    batch_size: int = Field(32, ge=1, description="Utterances decoded together.")


class ASREvaluation(ASRGeneration, EvaluationScope):
    """The ``evaluation:`` section: beam search settings and what to score."""


class S2TModelConfig(BaseModel):
    """One model role of the ``asr`` task: fairseq2's S2T Transformer (Wang et al., 2020): two
    strided convolutions subsample the filterbank frames 4x, then a pre-norm Transformer."""

    model_config = ConfigDict(extra="forbid")

    dim: int = Field(256, ge=8, description="Model width (encoder and decoder).")
    encoder_layers: int = Field(6, ge=1, description="Encoder layers.")
    decoder_layers: int = Field(3, ge=1, description="Decoder layers.")
    heads: int = Field(4, ge=1, description="Attention heads.")
    ffn_dim: int = Field(1024, ge=8, description="Feed-forward inner width.")
    subsampler_channels: int = Field(1024, ge=8, description="Inner channels of the convolutional subsampler (fairseq2's default: 1024).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout probability.")

    @model_validator(mode="after")
    def _check_heads(self) -> "S2TModelConfig":
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        return self
