"""The sentencepiece vocabulary shared by every model of an encoder-decoder task (one per training set)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from seqkd.fileio import atomic_write_bytes

PAD, UNK, BOS, EOS = 0, 1, 2, 3


def train_vocabulary(sentences: Iterable[str], path: Path, vocab_size: int, model_type: str) -> None:
    """Train on both sides of the training data and write ``path`` atomically."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        pad_id=PAD,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        hard_vocab_limit=False,
        input_sentence_size=2_000_000,  # a deterministic sample keeps WMT-size corpora tractable
        shuffle_input_sentence=True,
        num_threads=1,  # deterministic: one vocabulary per data hash
        minloglevel=2,
    )
    atomic_write_bytes(path, model.getvalue())


def load_vocabulary(path: Path) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(path))


def vocabulary_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
