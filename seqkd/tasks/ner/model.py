"""The BiLSTM-CRF tagger: embeddings, a bidirectional LSTM, linear emissions and a CRF on top."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqkd.tasks.ner.config import BiLSTMConfig
from seqkd.tasks.ner.crf import CRF


class BiLSTMCRF(nn.Module):
    """Emission scores per token from a BiLSTM; the CRF scores tag transitions.

    Sizes come from the model config, so a teacher and a much smaller student share one class (and
    one word and tag vocabulary, which distillation over tags needs).
    """

    def __init__(self, config: BiLSTMConfig, vocab_size: int, num_tags: int, pad_idx: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, config.embed_dim, padding_idx=pad_idx)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embed_dim, config.hidden_dim, num_layers=config.layers, bidirectional=True, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.emit = nn.Linear(2 * config.hidden_dim, num_tags)
        self.crf = CRF(num_tags)

    def hidden(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The BiLSTM output at each position, ``(N, T, 2H)``; zero at padding."""
        x = self.dropout(self.embed(tokens))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return self.dropout(out)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Emission scores ``(N, T, num_tags)``."""
        return self.emit(self.hidden(tokens, lengths))
