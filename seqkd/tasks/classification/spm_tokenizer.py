"""A sentencepiece model read as a BERT tokenizer: ``[CLS] text [SEP]`` (``[CLS] a [SEP] b [SEP]``
for pairs), with a ``[MASK]`` id.

The ``masked_lm`` task trains the model on its text with ``seqkd.tasks.seq2seq.vocab`` (pad 0,
unk 1, BOS 2, EOS 3): BOS serves as ``[CLS]``, EOS as ``[SEP]``, and ``[MASK]`` is one id past the
model's pieces. A classification task reads the same file (``vocabulary_from:``), so token ids
mean the same in both and a classifier can start from the masked LM's encoder. The object offers
the part of the ``transformers`` tokenizer API the classification task calls (``__call__``,
``__len__``, ``pad_token_id``, ``get_vocab``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from seqkd.errors import DataError
from seqkd.tasks.seq2seq.vocab import BOS, EOS, PAD, UNK, load_vocabulary

MASK_PIECE = "[MASK]"


class SentencePieceTokenizer:
    pad_token_id = PAD
    unk_token_id = UNK
    cls_token_id = BOS
    sep_token_id = EOS

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise DataError(f"{path}: no such sentencepiece model")
        self.path = path
        try:
            self.processor = load_vocabulary(path)
        except (OSError, RuntimeError) as exc:
            raise DataError(f"{path}: not a sentencepiece model ({str(exc).splitlines()[0]})") from None
        self.mask_token_id = self.processor.get_piece_size()

    def __len__(self) -> int:
        """Pieces plus ``[MASK]``: the rows a model's token embedding needs."""
        return self.mask_token_id + 1

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids that are never text: padding, unknown, ``[CLS]``, ``[SEP]``, ``[MASK]``."""
        return frozenset({PAD, UNK, BOS, EOS, self.mask_token_id})

    def get_vocab(self) -> dict[str, int]:
        vocab = {self.processor.id_to_piece(i): i for i in range(self.mask_token_id)}
        vocab[MASK_PIECE] = self.mask_token_id
        return vocab

    def ids(self, text: str) -> list[int]:
        """The pieces of a text, whitespace (newlines too) collapsed; no special tokens."""
        return self.processor.encode(" ".join(text.split()), out_type=int)

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode([i for i in ids if i < self.mask_token_id])

    def __call__(
        self, text: str, pair: str | None = None, *, truncation: bool = True, max_length: int | None = None,
        return_token_type_ids: bool = True,
    ) -> dict[str, Any]:
        """``input_ids`` and ``token_type_ids`` as ``transformers`` returns them; with
        ``truncation`` the longer text loses its last pieces first until ``max_length`` fits."""
        first = self.ids(text)
        second = self.ids(pair) if pair is not None else None
        if truncation and max_length is not None:
            budget = max(max_length - (2 if second is None else 3), 0)
            if second is None:
                first = first[:budget]
            else:
                while len(first) + len(second) > budget:
                    if len(first) >= len(second):
                        first.pop()
                    else:
                        second.pop()
        ids = [BOS, *first, EOS]
        segments = [0] * len(ids)
        if second is not None:
            ids += [*second, EOS]
            segments += [1] * (len(second) + 1)
        out: dict[str, Any] = {"input_ids": ids}
        if return_token_type_ids:
            out["token_type_ids"] = segments
        return out


@cache
def load_sentencepiece_tokenizer(path: Path) -> SentencePieceTokenizer:
    """The tokenizer of a sentencepiece model file, read once per process."""
    return SentencePieceTokenizer(path)
