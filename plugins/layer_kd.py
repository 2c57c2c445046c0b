"""What the intermediate-layer methods (``distilbert``, ``universal_kd``, ``hidden_mse``) share."""

from __future__ import annotations

import torch

from seqkd.errors import SeqkdError
from seqkd.tasks.base import LayerStates, TaskAdapter, TokenLogits


def probe(task: TaskAdapter, model: torch.nn.Module, max_tokens: int) -> LayerStates:
    """``model``'s layer states on one validation batch, without gradients: the depth and widths
    a method sizes its own modules (projections, pseudo-classifiers) by before training."""
    batch = task.valid_batches(max_tokens)[0].to(next(model.parameters()).device)
    with torch.no_grad():
        return task.layer_states(model, batch)


def check_layers(layers: list[int], depth: int, role: str, option: str) -> None:
    """Refuse layer numbers outside 1..depth (0 is the embeddings, which no method here matches)."""
    bad = [i for i in layers if not 1 <= i <= depth]
    if bad:
        raise SeqkdError(f"{option}: the {role} has layers 1..{depth}; {bad} are not among them")


def per_sequence(logits: torch.Tensor) -> TokenLogits:
    """``(N, C)`` logits as one position per sequence, every row counted, for ``seqkd.losses``."""
    n = logits.shape[0]
    return TokenLogits(logits.unsqueeze(1), torch.zeros(n, 1, dtype=torch.long, device=logits.device),
                       torch.ones(n, 1, dtype=torch.bool, device=logits.device))
