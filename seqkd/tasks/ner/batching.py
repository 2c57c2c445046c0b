"""Batches of tagged sentences under a token budget, and a resumable shuffled epoch reader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

Example = dict[str, Any]  # {"tokens": LongTensor (L,), "tags": LongTensor (L,), "index": int}

SORT_WINDOW_BATCHES = 50  # length-sorting window, in batches
TYPICAL_SENTENCE_TOKENS = 30  # to turn that into sentences without a pass over the data


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
    batches, group, longest = [], [], 0
    for e in examples:
        n = len(e["tokens"])
        if group and (len(group) + 1) * max(longest, n) > max_tokens:
            batches.append(collate(group, pad_idx))
            group, longest = [], 0
        group.append(e)
        longest = max(longest, n)
    if group:
        batches.append(collate(group, pad_idx))
    return batches


class EpochReader:
    """Endless shuffled batches; epoch ``e`` is shuffled with seed ``seed + e``.

    Within an epoch, sentences are sorted by length inside windows of about 50 batches so that a
    batch holds little padding while batch order stays random. The state is (epoch, position): an
    epoch's batches are a function of the seed, so resuming rebuilds them and skips ahead.
    """

    def __init__(self, examples: list[Example], max_tokens: int, pad_idx: int, seed: int) -> None:
        self.examples, self.max_tokens, self.pad_idx, self.seed = examples, max_tokens, pad_idx, seed
        self.epoch, self.position = 0, 0

    def _epoch_batches(self) -> list[NERBatch]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.examples), generator=g).tolist()
        shuffled = [self.examples[i] for i in order]
        window = max(SORT_WINDOW_BATCHES * self.max_tokens // TYPICAL_SENTENCE_TOKENS, 1)
        arranged = []
        for s in range(0, len(shuffled), window):
            arranged += sorted(shuffled[s : s + window], key=lambda e: len(e["tokens"]))
        batches = budget_batches(arranged, self.max_tokens, self.pad_idx)
        perm = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in perm]

    def __iter__(self) -> Iterator[NERBatch]:
        while True:
            batches = self._epoch_batches()
            while self.position < len(batches):
                self.position += 1
                yield batches[self.position - 1]
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
