"""Batches under a token budget and a resumable shuffled epoch reader, shared by the adapters
whose examples are one token sequence each (``ner``, ``classification``).

An example is a dict with a ``tokens`` tensor (its length is what the budget counts) and whatever
else the adapter's ``collate`` turns into a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

Example = dict[str, Any]
Collate = Callable[[list[Example]], Any]

SORT_WINDOW_BATCHES = 50  # length-sorting window, in batches
TYPICAL_SENTENCE_TOKENS = 30  # to turn that into sentences without a pass over the data


def budget_groups(examples: list[Example], max_tokens: int) -> list[list[Example]]:
    """Consecutive examples grouped so that rows * longest row stays within ``max_tokens``."""
    groups: list[list[Example]] = []
    group: list[Example] = []
    longest = 0
    for e in examples:
        n = len(e["tokens"])
        if group and (len(group) + 1) * max(longest, n) > max_tokens:
            groups.append(group)
            group, longest = [], 0
        group.append(e)
        longest = max(longest, n)
    if group:
        groups.append(group)
    return groups


class EpochReader:
    """Endless shuffled batches; epoch ``e`` is shuffled with seed ``seed + e``.

    Within an epoch, examples are sorted by length inside windows of about 50 batches so that a
    batch holds little padding while batch order stays random. The state is (epoch, position): an
    epoch's batches are a function of the seed, so resuming rebuilds them and skips ahead.
    """

    def __init__(self, examples: list[Example], max_tokens: int, seed: int, collate: Collate) -> None:
        self.examples, self.max_tokens, self.seed, self.collate = examples, max_tokens, seed, collate
        self.epoch, self.position = 0, 0

    def _epoch_batches(self) -> list[Any]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.examples), generator=g).tolist()
        shuffled = [self.examples[i] for i in order]
        window = max(SORT_WINDOW_BATCHES * self.max_tokens // TYPICAL_SENTENCE_TOKENS, 1)
        arranged = []
        for s in range(0, len(shuffled), window):
            arranged += sorted(shuffled[s : s + window], key=lambda e: len(e["tokens"]))
        batches = [self.collate(group) for group in budget_groups(arranged, self.max_tokens)]
        perm = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in perm]

    def __iter__(self) -> Iterator[Any]:
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
