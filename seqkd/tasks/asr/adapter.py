"""The ``asr`` task adapter: speech in, transcripts out, WER/CER with jiwer.

Speech recognition is an encoder-decoder task whose sources are audio, so it is a
:class:`~seqkd.tasks.seq2seq.adapter.Seq2SeqTask`: batches, ``forward``, ``hidden_states``, beam
search and the token-level capabilities are the shared ones, and ``word_kd`` and ``seq_kd`` apply
unchanged (ASR distillation). What is speech-specific lives here: an utterance's source is an
audio reference whose features (``audio.py``) replace token ids, the vocabulary is trained on
transcripts only, batches count feature frames, training features may be masked (SpecAugment),
and outputs are scored by word and character error rate.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import jiwer
import torch
import torch.nn.functional as F

from seqkd.errors import DataError
from seqkd.tasks.asr.audio import FRAMES_PER_SECOND, SAMPLE_RATE, load_features
from seqkd.tasks.asr.config import ASRConfig, ASREvaluation, ASRGeneration, S2TModelConfig, SpecAugment
from seqkd.tasks.asr.corpus import mustc_files, parse_audio_ref, read_manifest, read_mustc
from seqkd.tasks.asr.model import build_s2t_transformer
from seqkd.tasks.base import TargetSet, TokenLogits
from seqkd.tasks.seq2seq.adapter import Seq2SeqTask
from seqkd.tasks.seq2seq.batching import EpochReader, Seq2SeqBatch
from seqkd.tasks.seq2seq.corpus import Pair
from seqkd.tasks.seq2seq.vocab import EOS, PAD

_PUNCTUATION = re.compile(r"[^\w\s'-]")


def normalize_transcript(text: str) -> str:
    """Lower case, punctuation (but apostrophes and hyphens) removed, spaces collapsed: what is
    scored, since punctuation and case are not heard."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


@dataclass(frozen=True)
class ASROutput(TokenLogits):
    """The decoder's token logits and, in hybrid CTC/attention training, the summed CTC loss of
    the batch's utterances (``ctc``), which :meth:`ASRTask.nll` mixes into the task loss."""

    ctc: torch.Tensor | None = None


class ASRTask(Seq2SeqTask):
    name: ClassVar[str] = "asr"
    description: ClassVar[str] = "Speech recognition: fairseq2 S2T Transformer on log-mel filterbanks, WER/CER with jiwer"
    config_schema = ASRConfig
    evaluation_schema = ASREvaluation
    generation_schema = ASRGeneration
    model_schema = S2TModelConfig
    noise_schema = None
    capabilities: ClassVar[frozenset[str]] = frozenset({"token_logits", "generation", "hidden_states"})
    headline_metrics: ClassVar[dict[str, str]] = {"wer": "WER", "cer": "CER"}
    batch_by: ClassVar[str] = "source"

    config: ASRConfig

    @property
    def max_source_len(self) -> int:
        """Feature frames (10 ms each) a model reads."""
        return int(self.config.max_seconds * FRAMES_PER_SECOND) + 1

    @property
    def max_target_len(self) -> int:
        return self.config.max_target_len

    @property
    def _positions(self) -> int:
        return self.max_target_len + 2  # the decoder's; the encoder's follow from max_source_len

    # -- data -----------------------------------------------------------------------------------

    def _manifest(self) -> Path:
        """The manifest, built first when missing and the recipe says how (``synthesize:``)."""
        data = self.config.data
        path = self.resolve(data.manifest)
        if not path.exists() and data.synthesize is not None:
            from seqkd.tasks.asr.synthesize import build_speech_corpus

            settings = data.synthesize
            build_speech_corpus(settings, self.resolve(settings.corpus), path.parent)
        return path

    def data_files(self) -> list[Path]:
        data = self.config.data
        if data.manifest is not None:
            return [self._manifest()]
        return [f for files in mustc_files(self.resolve(data.mustc), data.language).values() for f in files]

    def read_splits(self) -> dict[str, list[Pair]]:
        data = self.config.data
        if data.manifest is not None:
            pairs = read_manifest(self._manifest(), SAMPLE_RATE, self.config.max_seconds)
        else:
            pairs = read_mustc(self.resolve(data.mustc), data.language, self.config.max_seconds)
        if data.max_train_utterances is not None:
            pairs["train"] = pairs["train"][: data.max_train_utterances]
        return pairs

    def vocabulary_texts(self, pairs: list[Pair]) -> list[str]:
        return [p.target for p in pairs]

    def encode_sources(self, texts: list[str]) -> list[torch.Tensor]:
        """Normalised filterbank features of each audio reference (``path`` or ``path#start,end``)."""
        return [load_features(*parse_audio_ref(ref)) for ref in texts]

    def train_reader(self, max_tokens: int, seed: int, target_sets: Sequence[TargetSet] = (None,)) -> Any:
        reader = super().train_reader(max_tokens, seed, target_sets)
        return reader if self.config.spec_augment is None else SpecAugmentReader(reader, self.config.spec_augment, seed)

    # -- models -----------------------------------------------------------------------------------

    def build_model(self, model_config: S2TModelConfig, output_space: dict[str, Any] | None = None) -> torch.nn.Module:
        if output_space is not None and output_space.get("vocabulary") != self.vocabulary_id():
            raise DataError(
                f"an asr model's vocabulary ({output_space.get('vocabulary')}) is its sentencepiece model; "
                f"this task's is {self.vocabulary_id()}: a teacher of another vocabulary cannot be rebuilt here"
            )
        return build_s2t_transformer(
            model_config, self.vocab_size, PAD, self.max_source_len, self._positions, ctc=self.config.ctc_weight > 0,
        )

    def forward(self, model: torch.nn.Module, batch: Seq2SeqBatch, view: str | None = None) -> TokenLogits:
        """The shared forward pass (as ``hidden_states``), plus the CTC loss on the encoder's
        output when the model has a CTC head.

        Attention alone learns to align audio with text slowly (on a CPU budget, it had not
        after 2,500 updates); a CTC loss on the encoder forces monotonic alignments from the
        start (Watanabe et al., 2017, hybrid CTC/attention), and the decoder then learns fast.
        """
        ctc_proj = getattr(model, "ctc_proj", None)
        if ctc_proj is None:
            return super().forward(model, batch, view)
        encoded, layout, hidden = self.encode_decode(model, batch, view)
        mask = batch.target_out != PAD
        return ASROutput(model.final_proj(hidden), batch.target_out, mask, self._ctc_loss(ctc_proj(encoded), layout, batch))

    @staticmethod
    def _ctc_loss(logits: torch.Tensor, layout: Any, batch: Seq2SeqBatch) -> torch.Tensor:
        """Summed over utterances (as the attention NLL is summed over tokens); targets are the
        transcript tokens without EOS, blank is the padding id."""
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (S, N, V)
        input_lens = torch.as_tensor(list(layout.seq_lens) if layout.padded else [logits.shape[1]] * logits.shape[0])
        targets = batch.target_out.masked_fill(batch.target_out == EOS, PAD)
        target_lens = (targets != PAD).sum(dim=1).cpu()
        return F.ctc_loss(log_probs, targets, input_lens, target_lens, blank=PAD, reduction="sum", zero_infinity=True)

    def nll(self, output: TokenLogits, label_smoothing: float) -> tuple[torch.Tensor, int]:
        loss, n = super().nll(output, label_smoothing)
        if isinstance(output, ASROutput) and output.ctc is not None:
            weight = self.config.ctc_weight
            loss = (1 - weight) * loss + weight * output.ctc
        return loss, n

    # -- scoring ----------------------------------------------------------------------------------

    def predict(self, model: torch.nn.Module, inputs: list[str], options: ASRGeneration) -> list[str]:
        return self.decode(model, [line.strip() for line in inputs], options)

    def score(self, split: str, predictions: list[str], options: ASREvaluation) -> dict[str, Any]:
        """Corpus WER and CER (percent) on normalised transcripts (lower case, no punctuation)."""
        references = [normalize_transcript(r) for r in self.references(split, len(predictions))]
        hypotheses = [normalize_transcript(p) for p in predictions]
        words = jiwer.process_words(references, hypotheses)
        return {
            "split": split, "sentences": len(predictions), "beam_size": options.beam_size,
            "wer": round(100 * words.wer, 2), "cer": round(100 * jiwer.cer(references, hypotheses), 2),
            "substitutions": words.substitutions, "deletions": words.deletions, "insertions": words.insertions,
        }

    def sentence_score(self, hypothesis: str, reference: str) -> float:
        """100 − WER of one transcript (higher is better, as every task's sentence score)."""
        return 100.0 * (1.0 - jiwer.wer(normalize_transcript(reference) or "-", normalize_transcript(hypothesis)))


class SpecAugmentReader:
    """Training batches with SpecAugment masks. Each batch's masks are drawn from a generator
    seeded by the reader's seed, the epoch and the batch's example indices, so a resumed run masks
    exactly as an uninterrupted one without any state of its own."""

    def __init__(self, reader: EpochReader, settings: SpecAugment, seed: int) -> None:
        self.reader, self.settings, self.seed = reader, settings, seed

    def __iter__(self) -> Iterator[Seq2SeqBatch]:
        for batch in self.reader:
            key = f"{self.seed}:{self.reader.epoch}:{batch.indices.tolist()}".encode()
            generator = torch.Generator().manual_seed(zlib.crc32(key))
            yield batch.with_inputs(None, spec_augment(batch.source, batch.source_lens, self.settings, generator), batch.source_lens)

    def state_dict(self) -> dict[str, Any]:
        return self.reader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reader.load_state_dict(state)


def spec_augment(features: torch.Tensor, lens: list[int], settings: SpecAugment, generator: torch.Generator) -> torch.Tensor:
    """``features`` (N, S, F) with frequency and time masks (set to 0, the normalised mean) within
    each utterance's own frames."""
    out = features.clone()
    channels = features.shape[-1]
    for row, length in enumerate(lens):
        for _ in range(settings.freq_masks):
            width = int(torch.randint(settings.freq_width + 1, (1,), generator=generator))
            start = int(torch.randint(max(channels - width, 0) + 1, (1,), generator=generator))
            out[row, :length, start : start + width] = 0
        max_width = int(settings.time_width * length)
        for _ in range(settings.time_masks):
            width = int(torch.randint(max_width + 1, (1,), generator=generator))
            start = int(torch.randint(max(length - width, 0) + 1, (1,), generator=generator))
            out[row, start : start + width, :] = 0
    return out
