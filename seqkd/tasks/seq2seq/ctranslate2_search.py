"""Beam search on CTranslate2 (``engine: ctranslate2`` or ``ctranslate2_int8`` in the beam settings).

fairseq2's generator runs each search step in Python, once per sentence, so a teacher that decodes
the whole training corpus (seq-KD's n-best cache) spends much of its time outside the model.
CTranslate2 runs the same search in C++. The model is converted in memory with the exporter's spec
(``export.py``, so what it cannot express is refused the same way, in one line), loaded once per
state of its weights, and given the batches ``decode.beam_search`` would form, with the same length
limits. Token ids go in and out as the vocabulary's pieces, which sentencepiece keeps unique.

With float32 weights the hypotheses are fairseq2's up to floating-point ties (the n-best test
checks them); int8 weights round the model and may change a few.
"""

from __future__ import annotations

import tempfile
import weakref
from typing import Any

import torch

from seqkd.tasks.seq2seq.config import BeamSettings
from seqkd.tasks.seq2seq.decode import Decoded
from seqkd.tasks.seq2seq.export import ctranslate2_spec, max_decoding_length, translate_options
from seqkd.tasks.seq2seq.vocab import EOS

COMPUTE_TYPES = {"ctranslate2": "float32", "ctranslate2_int8": "int8"}

_loaded: dict[str, Any] = {}  # the one translator in use: its model (weakly), the weights' key and the translator


def _translator(model: torch.nn.Module, pieces: list[str], compute_type: str) -> Any:
    """The model as a CTranslate2 translator; converted again only when its weights change."""
    import ctranslate2

    params = list(model.parameters())
    device = params[0].device
    key = repr(([p._version for p in params], compute_type, device.type))  # _version counts in-place updates
    loaded = _loaded.get("model")
    if loaded is None or loaded() is not model or _loaded.get("key") != key:  # a weak reference: a new model never matches
        _loaded.clear()
        spec = ctranslate2_spec(model, pieces)
        spec.optimize(quantization="float32")
        with tempfile.TemporaryDirectory(prefix="seqkd-ct2-") as folder:
            spec.save(folder)
            translator = ctranslate2.Translator(
                folder, device="cuda" if device.type == "cuda" else "cpu", compute_type=compute_type,
                intra_threads=torch.get_num_threads(),
            )
        _loaded.update(model=weakref.ref(model), key=key, translator=translator)
    return _loaded["translator"]


def ctranslate2_search(
    model: torch.nn.Module, pieces: list[str], sources: list[list[int]], settings: BeamSettings, max_seq_len: int,
    nbest: int = 1, max_source_len: int | None = None,
) -> Decoded:
    """``decode.beam_search`` on CTranslate2: ``sources`` are token ids ending in EOS; ``pieces``
    the vocabulary's pieces in id order."""
    max_source_len = max_source_len or max_seq_len
    translator = _translator(model, pieces, COMPUTE_TYPES[settings.engine])
    piece_id = {piece: i for i, piece in enumerate(pieces)}
    options = translate_options(settings, max_source_len)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: dict[int, list[tuple[list[int], float]]] = {}
    for lo in range(0, len(order), settings.batch_size):
        idx = order[lo : lo + settings.batch_size]
        batch = [[pieces[t] for t in sources[i][:max_source_len] if t != EOS] for i in idx]
        longest = max(len(s) for s in batch)
        out = translator.translate_batch(
            batch, **options, max_decoding_length=max_decoding_length(settings, longest, max_seq_len),
            num_hypotheses=nbest, return_scores=True,
        )
        for i, result in zip(idx, out):
            results[i] = [([piece_id[p] for p in hyp], float(score)) for hyp, score in zip(result.hypotheses, result.scores)]
    return Decoded([results[i] for i in range(len(sources))])
