"""Reading wav files and turning them into log-mel filterbank features.

Features come from fairseq2's ``WaveformToFbankConverter`` (Kaldi-compatible 80-channel log-mel
filterbanks, 25 ms windows every 10 ms, computed in fairseq2n's C++): it is the extractor fairseq2's
own S2T models were trained with, and it needs no further dependency (torchaudio's Kaldi fbank
would, and its loader now needs torchcodec). Audio is read with ``soundfile`` so that every problem
with a file can be named before any feature is computed.
"""

from __future__ import annotations

from pathlib import Path

import soundfile
import torch

from seqkd.errors import DataError
from seqkd.runtime import ensure_fairseq2

ensure_fairseq2()

from fairseq2.data.audio import WaveformToFbankConverter  # noqa: E402

SAMPLE_RATE = 16_000
MEL_BINS = 80
FRAMES_PER_SECOND = 100  # one feature frame per 10 ms

_converter = WaveformToFbankConverter(num_mel_bins=MEL_BINS, waveform_scale=32768.0, standardize=False)


def read_wav(path: Path, start: float = 0.0, end: float | None = None) -> torch.Tensor:
    """The mono 16 kHz waveform of ``path`` (seconds ``start`` to ``end``), as float32 in [-1, 1].

    A file at another sample rate is refused rather than resampled: resampling silently would hide a
    corpus prepared for another front end, and 16 kHz is what every recipe here is built for.
    """
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise DataError(f"{path}: cannot read audio ({str(exc).strip() or type(exc).__name__})") from None
    if info.samplerate != SAMPLE_RATE:
        raise DataError(f"{path}: sample rate {info.samplerate} Hz; seqkd reads 16000 Hz audio (resample it, e.g. sox in.wav -r 16000 out.wav)")
    if info.channels != 1:
        raise DataError(f"{path}: {info.channels} channels; seqkd reads mono audio (mix it down, e.g. sox in.wav -c 1 out.wav)")
    first = int(round(start * SAMPLE_RATE))
    last = None if end is None else int(round(end * SAMPLE_RATE))
    if first >= info.frames or (last is not None and last > info.frames + SAMPLE_RATE // 100):
        raise DataError(f"{path}: segment {start:.2f}-{end if end is not None else info.duration:.2f} s lies outside the file ({info.duration:.2f} s)")
    samples, _ = soundfile.read(str(path), start=first, stop=last, dtype="float32", always_2d=False)
    if len(samples) < SAMPLE_RATE // 40:
        raise DataError(f"{path}: {len(samples)} samples; an utterance needs at least 25 ms of audio")
    return torch.from_numpy(samples)


def fbank(waveform: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``(frames, 80)`` log-mel filterbanks of a mono 16 kHz ``waveform``; with ``normalize``, each
    channel has zero mean and unit variance over the utterance (utterance-level CMVN)."""
    features = _converter({"waveform": waveform.reshape(1, -1).float(), "sample_rate": float(SAMPLE_RATE)})["fbank"]
    if normalize:
        features = (features - features.mean(0)) / features.std(0, unbiased=False).clamp(min=1e-5)
    return features


def load_features(path: Path, start: float = 0.0, end: float | None = None, normalize: bool = True) -> torch.Tensor:
    """The normalised filterbank features of a wav file (or of a segment of it)."""
    return fbank(read_wav(path, start, end), normalize)
