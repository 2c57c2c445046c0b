"""CRF taggers: word embeddings, a BiLSTM or a Transformer encoder (fairseq2 building blocks),
linear emissions and a CRF on top."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqkd.runtime import ensure_fairseq2
from seqkd.tasks.ner.config import TaggerConfig
from seqkd.tasks.ner.crf import CRF

ensure_fairseq2()

from fairseq2.models.transformer import (  # noqa: E402
    StandardFeedForwardNetwork,
    StandardMultiheadAttention,
    StandardTransformerEncoder,
    StandardTransformerEncoderLayer,
    TransformerNormOrder,
    create_default_sdpa,
)
from fairseq2.models.transformer.attention_bias import IdentityBias  # noqa: E402
from fairseq2.nn import BatchLayout, SinusoidalPositionEncoder, StandardLayerNorm  # noqa: E402


class BiLSTMCRF(nn.Module):
    """Emission scores per token from a BiLSTM; the CRF scores tag transitions.

    Sizes come from the model config, so a teacher and a much smaller student share one class (and
    one word and tag vocabulary, which distillation over tags needs).
    """

    def __init__(self, config: TaggerConfig, vocab_size: int, num_tags: int, pad_idx: int) -> None:
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


class TransformerCRF(nn.Module):
    """Emission scores from a pre-norm Transformer encoder (fairseq2 layers) over word embeddings.

    Attention is bidirectional (no causal bias); padding is kept out of attention by the batch
    layout built from the sentence lengths.
    """

    def __init__(self, config: TaggerConfig, vocab_size: int, num_tags: int, pad_idx: int, max_seq_len: int) -> None:
        super().__init__()
        dim = config.embed_dim
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_idx)
        self.scale = dim**0.5
        self.position = SinusoidalPositionEncoder(dim, max_seq_len)
        self.dropout = nn.Dropout(config.dropout)
        layers = [
            StandardTransformerEncoderLayer(
                StandardMultiheadAttention(dim, config.heads, create_default_sdpa(IdentityBias())),
                StandardLayerNorm(dim, bias=True),
                StandardFeedForwardNetwork(dim, config.ffn_dim, bias=True),
                StandardLayerNorm(dim, bias=True),
                norm_order=TransformerNormOrder.PRE,
                dropout_p=config.dropout,
            )
            for _ in range(config.layers)
        ]
        self.encoder = StandardTransformerEncoder(layers, StandardLayerNorm(dim, bias=True))
        self.emit = nn.Linear(dim, num_tags)
        self.crf = CRF(num_tags)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        layout = BatchLayout(tuple(tokens.shape), lengths.tolist(), device=tokens.device)
        x = self.dropout(self.position(self.embed(tokens) * self.scale, layout))
        return self.emit(self.dropout(self.encoder(x, layout)))


def build_tagger(config: TaggerConfig, vocab_size: int, num_tags: int, pad_idx: int, max_seq_len: int) -> nn.Module:
    if config.encoder == "transformer":
        return TransformerCRF(config, vocab_size, num_tags, pad_idx, max_seq_len)
    return BiLSTMCRF(config, vocab_size, num_tags, pad_idx)
