"""The masked language model: the classification task's BERT-shaped encoder (the same
``Embeddings`` and fairseq2 layer stack, so the same parameter names) and BERT's MLM head, whose
output layer is the token embedding matrix (tied) plus a bias.

The head reads only the positions chosen for prediction (``positions``), so a batch pays for
``(N, K, V)`` logits, K the most chosen positions in a row, not ``(N, T, V)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqkd.runtime import ensure_fairseq2
from seqkd.tasks.classification.model import Embeddings, build_encoder, run_encoder
from seqkd.tasks.masked_lm.config import MaskedLMModelConfig

ensure_fairseq2()

from fairseq2.nn import StandardLayerNorm  # noqa: E402


@dataclass(frozen=True)
class MLMOutput:
    logits: torch.Tensor  # (N, K, V) at the chosen positions
    last: torch.Tensor  # (N, T, D) the last layer's output at every position
    hidden: tuple[torch.Tensor, ...] = ()  # with ``layers``: (N, T, D) per layer, embeddings first
    attentions: tuple[torch.Tensor, ...] = ()  # with ``attentions``: (N, H, T, T) per layer


class MaskedLanguageModel(nn.Module):
    layer_prefix = "encoder.layers"

    def __init__(self, config: MaskedLMModelConfig, vocab_size: int, pad_idx: int, max_seq_len: int) -> None:
        super().__init__()
        dim = config.dim
        self.embeddings = Embeddings(vocab_size, dim, max_seq_len, pad_idx, config.dropout)
        self.encoder = build_encoder(config.layers, dim, config.heads, config.ffn_dim, config.dropout)
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), StandardLayerNorm(dim, bias=True))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        # BERT's initialisation of all three embeddings: N(0, 0.02). The tied token embeddings start
        # small so the first logits are; the position and segment embeddings start as small so that,
        # summed before the input LayerNorm, they do not outweigh the tokens 50 to 1.
        for table in (self.embeddings.tokens, self.embeddings.positions, self.embeddings.segments):
            nn.init.normal_(table.weight, std=0.02)
        with torch.no_grad():
            self.embeddings.tokens.weight[pad_idx].zero_()

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor, *, layers: bool = False, attentions: bool = False,
    ) -> MLMOutput:
        segments = torch.zeros_like(tokens)
        x, states, maps = run_encoder(self.embeddings, self.encoder, tokens, segments, lengths, layers=layers, attentions=attentions)
        picked = x.gather(1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        logits = F.linear(self.transform(picked), self.embeddings.tokens.weight, self.bias)
        return MLMOutput(logits, x, states, maps)
