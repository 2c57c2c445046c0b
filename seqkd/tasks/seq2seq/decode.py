"""Beam search with fairseq2's generator, for every encoder-decoder task."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqkd.runtime import ensure_fairseq2
from seqkd.tasks.seq2seq.config import BeamSettings
from seqkd.tasks.seq2seq.vocab import BOS, EOS, PAD, UNK

ensure_fairseq2()

from fairseq2.data.tokenizers import VocabularyInfo  # noqa: E402
from fairseq2.generation.beam_search import BeamSearchSeq2SeqGenerator  # noqa: E402
from fairseq2.generation.step_processor import NGramRepeatBlockProcessor  # noqa: E402
from fairseq2.models.transformer import TransformerModel  # noqa: E402
from fairseq2.nn import BatchLayout  # noqa: E402


@dataclass(frozen=True)
class Decoded:
    nbest: list[list[tuple[list[int], float]]]  # per source, in input order: (tokens without EOS, score), best first

    @property
    def token_ids(self) -> list[list[int]]:
        """The best hypothesis per source."""
        return [hyps[0][0] if hyps else [] for hyps in self.nbest]


@torch.no_grad()
def beam_search(
    model: TransformerModel,
    sources: list[list[int]],
    vocab_size: int,
    settings: BeamSettings,
    max_seq_len: int,
    nbest: int = 1,
    max_source_len: int | None = None,
) -> Decoded:
    """Decode ``sources`` (token ids ending in EOS, or ``(frames, features)`` tensors) in
    length-sorted batches, keeping ``nbest``; sources are cut to ``max_source_len`` (default
    ``max_seq_len``) and hypotheses to ``max_seq_len`` tokens."""
    max_source_len = max_source_len or max_seq_len
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = BeamSearchSeq2SeqGenerator(
        model,
        VocabularyInfo(vocab_size, UNK, BOS, EOS, PAD),
        beam_size=settings.beam_size,
        len_penalty=settings.len_penalty,
        min_gen_len=settings.min_len,
        max_gen_len=(settings.max_len_a, settings.max_len_b),
        max_seq_len=max_seq_len,
        step_processors=[NGramRepeatBlockProcessor(settings.no_repeat_ngram)] if settings.no_repeat_ngram else None,
    )
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    batches = [order[lo : lo + settings.batch_size] for lo in range(0, len(order), settings.batch_size)]
    results: dict[int, list[tuple[list[int], float]]] = {}
    for idx in batches:
        seqs = [torch.as_tensor(sources[i][:max_source_len]) for i in idx]
        lens = [len(s) for s in seqs]
        src = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=PAD).to(device)
        prompt = torch.full((len(idx), 1), BOS, device=device)
        out = generator(
            src, BatchLayout(tuple(src.shape[:2]), lens, device=device), prompt,
            BatchLayout(tuple(prompt.shape), [1] * len(idx), device=device),
        )
        for i, hyps in zip(idx, out.hypotheses):
            results[i] = [
                ([t for t in h.seq.tolist() if t != EOS], float(h.score) if h.score is not None else 0.0)
                for h in hyps[:nbest]
            ]
    model.train(was_training)
    return Decoded([results[i] for i in range(len(sources))])

