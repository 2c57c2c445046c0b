"""Batches of tagged sentences under a token budget (the shuffled reader is ``seqkd.tasks.batching``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqkd.tasks.batching import Example, budget_groups  # Example: {"tokens": (L,), "tags": (L,), "index": int}


@dataclass
class NERBatch:
    tokens: torch.Tensor  # (N, T) word ids, padded
    tags: torch.Tensor  # (N, T) tag ids, 0 (a real tag) at padding: the mask says which are real
    lengths: torch.Tensor  # (N,)
    indices: torch.Tensor  # (N,) each row's example index in its split (keys teacher-output caches)

    @property
    def mask(self) -> torch.Tensor:
        return torch.arange(self.tokens.shape[1], device=self.tokens.device).unsqueeze(0) < self.lengths.to(self.tokens.device).unsqueeze(1)

    def to(self, device: torch.device) -> "NERBatch":
        return NERBatch(self.tokens.to(device), self.tags.to(device), self.lengths, self.indices)

    @property
    def num_target_elements(self) -> int:
        return int(self.lengths.sum())


def collate(examples: list[Example], pad_idx: int) -> NERBatch:
    lengths = torch.tensor([len(e["tokens"]) for e in examples])
    width = int(lengths.max())
    tokens = torch.full((len(examples), width), pad_idx, dtype=torch.long)
    tags = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        tokens[row, : len(e["tokens"])] = e["tokens"]
        tags[row, : len(e["tags"])] = e["tags"]
    return NERBatch(tokens, tags, lengths, torch.tensor([e["index"] for e in examples]))


def budget_batches(examples: list[Example], max_tokens: int, pad_idx: int) -> list[NERBatch]:
    """Consecutive examples grouped so that rows * longest row stays within ``max_tokens``."""
    return [collate(group, pad_idx) for group in budget_groups(examples, max_tokens)]
