"""Token-budget batches with length bucketing, from fairseq2 data pipelines."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from seqkd.errors import DataError
from seqkd.runtime import ensure_fairseq2

ensure_fairseq2()

from fairseq2.data.data_pipeline import DataPipeline, create_bucket_sizes, read_sequence  # noqa: E402
from fairseq2.nn import BatchLayout  # noqa: E402


@dataclass
class Seq2SeqBatch:
    source: torch.Tensor  # (N, S): source tokens + EOS, padded; (N, S, F) for speech features
    source_lens: list[int]
    target_in: torch.Tensor  # (N, T): BOS + target tokens, padded
    target_out: torch.Tensor  # (N, T): target tokens + EOS, padded
    target_lens: list[int]
    indices: torch.Tensor  # (N,): each row's example index in its split (keys teacher-output caches)
    # other input views of the same examples (e.g. ``asr`` transcripts): name -> (tokens + EOS padded, lengths)
    views: dict[str, tuple[torch.Tensor, list[int]]] = field(default_factory=dict)

    def to(self, device: torch.device) -> "Seq2SeqBatch":
        return Seq2SeqBatch(
            self.source.to(device), self.source_lens, self.target_in.to(device), self.target_out.to(device),
            self.target_lens, self.indices, {k: (v.to(device), lens) for k, (v, lens) in self.views.items()},
        )

    @property
    def num_target_elements(self) -> int:
        return sum(self.target_lens)

    def source_layout(self) -> BatchLayout:
        return BatchLayout(tuple(self.source.shape[:2]), self.source_lens, device=self.source.device)

    def inputs(self, view: str | None) -> tuple[torch.Tensor, BatchLayout]:
        """The source tokens the model reads: the task's own, or a named view's."""
        if view is None:
            return self.source, self.source_layout()
        if view not in self.views:
            raise DataError(
                f"the batch has no input view {view!r} (it has: {', '.join(sorted(self.views)) or 'none'}); "
                "a task's views come from `reads:` in its recipe section"
            )
        tokens, lens = self.views[view]
        return tokens, BatchLayout(tuple(tokens.shape[:2]), lens, device=tokens.device)

    def with_inputs(self, view: str | None, tokens: torch.Tensor, lens: list[int]) -> "Seq2SeqBatch":
        """A copy whose source (or view) is replaced, e.g. by a noisy copy."""
        if view is None:
            return replace(self, source=tokens, source_lens=lens)
        return replace(self, views={**self.views, view: (tokens, lens)})

    def target_layout(self) -> BatchLayout:
        return BatchLayout(tuple(self.target_in.shape), self.target_lens, device=self.target_in.device)


# {"source": src + EOS, "target": BOS + tgt + EOS, "index": i, "view:<name>": view tokens + EOS, ...}
Example = dict[str, torch.Tensor | int]
VIEW = "view:"


def _to_batch(collated: dict[str, Any]) -> Seq2SeqBatch:
    src, tgt = collated["source"], collated["target"]
    target_lens = [n - 1 for n in tgt["seq_lens"]]
    seqs = tgt["seqs"]
    views = {
        key[len(VIEW):]: (value["seqs"], list(value["seq_lens"])) for key, value in collated.items() if key.startswith(VIEW)
    }
    return Seq2SeqBatch(
        src["seqs"], list(src["seq_lens"]), seqs[:, :-1], seqs[:, 1:], target_lens, torch.as_tensor(collated["index"]), views
    )


def _pipeline(
    examples: list[Example], max_tokens: int, max_seq_len: int, pad_idx: int, shuffle_seed: int | None, length_of: str
) -> DataPipeline:
    """Batches of examples of similar ``length_of`` (``source`` or ``target``) length, each holding
    at most ``max_tokens`` of that side's tokens, padding included."""
    # fairseq2 wants the token budget to be a multiple of the longest bucket.
    budget = max(max_tokens // max_seq_len, 1) * max_seq_len
    if shuffle_seed is not None:
        # A permutation of the whole epoch, rather than the pipeline's shuffle buffer, keeps the
        # pipeline's state (saved in every checkpoint) small however large the corpus is.
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(shuffle_seed))
        examples = [examples[i] for i in order.tolist()]
    builder = read_sequence(examples).bucket_by_length(
        create_bucket_sizes(max_num_elements=budget, max_seq_len=max_seq_len),
        selector=length_of,
        skip_above_max_examples=True,
    )
    return builder.collate(pad_value=pad_idx).map(_to_batch).and_return()


class EpochReader:
    """Endless shuffled batches; epoch ``e`` is shuffled with seed ``seed + e``.

    Its state (epoch and the fairseq2 pipeline's position) holds only tensors and plain Python
    values, so checkpoints that contain it still load with ``weights_only=True``.
    """

    def __init__(
        self, examples: list[Example], max_tokens: int, max_seq_len: int, pad_idx: int, seed: int, length_of: str = "target"
    ) -> None:
        self._args = (examples, max_tokens, max_seq_len, pad_idx)
        self._length_of = length_of
        self._seed = seed
        self.epoch = 0
        self._pipeline = self._build()

    def _build(self) -> DataPipeline:
        return _pipeline(*self._args, shuffle_seed=self._seed + self.epoch, length_of=self._length_of)

    def __iter__(self) -> Iterator[Seq2SeqBatch]:
        while True:
            yield from self._pipeline
            self.epoch += 1
            self._pipeline = self._build()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pipeline": self._pipeline.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self._pipeline = self._build()
        self._pipeline.load_state_dict(state["pipeline"])


def fixed_batches(
    examples: list[Example], max_tokens: int, max_seq_len: int, pad_idx: int, length_of: str = "target"
) -> list[Seq2SeqBatch]:
    """Unshuffled batches over all examples (validation)."""
    return list(_pipeline(examples, max_tokens, max_seq_len, pad_idx, shuffle_seed=None, length_of=length_of))


# -- batches of a token store (``seqkd.tasks.seq2seq.store``) ------------------------------------
#
# The same batches as ``_pipeline`` (fairseq2's ``bucket_by_length`` and ``collate``), computed
# from an array of lengths, so that an epoch of millions of examples is an int64 permutation and a
# list of index arrays rather than a list of example dicts; each batch's rows are read from the
# memory-mapped store only when the batch is made.


def bucket_batches(lengths: np.ndarray, max_tokens: int, max_seq_len: int) -> list[np.ndarray]:
    """Positions (into ``lengths``) of each batch, in the order fairseq2 0.8.1's
    ``bucket_by_length(create_bucket_sizes(...), skip_above_max_examples=True)`` emits them for
    examples of these lengths read in order: a batch is emitted when its bucket (the smallest whose
    length bound holds the example) fills; at the end, the fullest-length leftover bucket is topped
    up from the ends of the shorter ones, repeatedly."""
    budget = max(max_tokens // max_seq_len, 1) * max_seq_len
    sizes = create_bucket_sizes(max_num_elements=budget, max_seq_len=max_seq_len)
    bounds = np.array([n for _, n in sizes])
    lengths = np.asarray(lengths)
    positions = np.flatnonzero((lengths >= 1) & (lengths <= bounds[-1]))
    bucket_of = np.searchsorted(bounds, lengths[positions], side="left")
    full: list[tuple[int, np.ndarray]] = []
    left: list[list[int]] = []
    for b, (size, _) in enumerate(sizes):
        members = positions[bucket_of == b]
        n_full = len(members) // size
        for k in range(n_full):
            batch = members[k * size : (k + 1) * size]
            full.append((int(batch[-1]), batch))
        left.append(members[n_full * size :].tolist())
    full.sort(key=lambda item: item[0])
    batches = [batch for _, batch in full]
    for i in range(len(sizes) - 1, -1, -1):
        while left[i]:
            bucket, left[i] = left[i], []
            remaining = sizes[i][0] - len(bucket)
            for j in range(i - 1, -1, -1):
                while remaining > 0 and left[j]:
                    bucket.append(left[j].pop())
                    remaining -= 1
                if remaining == 0:
                    break
            batches.append(np.array(bucket, dtype=np.int64))
    return batches


class StoredItems:
    """The items a store reader batches: rows of a :class:`~seqkd.tasks.seq2seq.store.StoredSplit`,
    each with the store's target or a replacement (a teacher's output: BOS + ids + EOS)."""

    def __init__(self, split: Any, rows: np.ndarray, targets: list[torch.Tensor | None] | None = None) -> None:
        self.split, self.rows, self.targets = split, np.asarray(rows, dtype=np.int64), targets

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def concat(cls, parts: list["StoredItems"]) -> "StoredItems":
        if len(parts) == 1:
            return parts[0]
        targets = None
        if any(p.targets is not None for p in parts):
            targets = [t for p in parts for t in (p.targets if p.targets is not None else [None] * len(p))]
        return cls(parts[0].split, np.concatenate([p.rows for p in parts]), targets)

    def lengths(self, side: str) -> np.ndarray:
        lengths = self.split.lengths(side)[self.rows]
        if side == "target" and self.targets is not None:
            lengths = lengths.copy()
            for i, t in enumerate(self.targets):
                if t is not None:
                    lengths[i] = len(t)
        return lengths

    def collate(self, items: np.ndarray, pad_idx: int) -> Seq2SeqBatch:
        rows = self.rows[items]
        sources = [self.split.row("source", int(r)) for r in rows]
        targets = [
            self.targets[i] if self.targets is not None and self.targets[i] is not None else self.split.row("target", int(r))
            for i, r in zip(items.tolist(), rows)
        ]
        src = torch.nn.utils.rnn.pad_sequence(sources, batch_first=True, padding_value=pad_idx)
        tgt = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=pad_idx)
        return Seq2SeqBatch(
            src, [len(s) for s in sources], tgt[:, :-1], tgt[:, 1:], [len(t) - 1 for t in targets],
            torch.from_numpy(rows.copy()),
        )


def stored_batches(items: StoredItems, max_tokens: int, max_seq_len: int, pad_idx: int, length_of: str = "target") -> list[Seq2SeqBatch]:
    """``fixed_batches`` of stored items: unshuffled, the same batches."""
    return [items.collate(b, pad_idx) for b in bucket_batches(items.lengths(length_of), max_tokens, max_seq_len)]


class StoredEpochReader:
    """``EpochReader`` over stored items: the same batches for the same seed, made one at a time.

    Epoch ``e`` is the permutation ``randperm(n, seed + e)`` bucketed by length; the state is the
    epoch and how many of its batches were read, so resuming recomputes the epoch's batch index
    (a second or two at millions of examples) and goes on from there.
    """

    def __init__(self, items: StoredItems, max_tokens: int, max_seq_len: int, pad_idx: int, seed: int, length_of: str = "target") -> None:
        self.items, self.max_tokens, self.max_seq_len, self.pad_idx = items, max_tokens, max_seq_len, pad_idx
        self._lengths = items.lengths(length_of)
        self._seed = seed
        self.epoch, self.position = 0, 0

    def _epoch_batches(self) -> list[np.ndarray]:
        order = torch.randperm(len(self.items), generator=torch.Generator().manual_seed(self._seed + self.epoch)).numpy()
        return [order[b] for b in bucket_batches(self._lengths[order], self.max_tokens, self.max_seq_len)]

    def __iter__(self) -> Iterator[Seq2SeqBatch]:
        while True:
            batches = self._epoch_batches()
            while self.position < len(batches):
                self.position += 1
                yield self.items.collate(batches[self.position - 1], self.pad_idx)
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "position" not in state:
            raise DataError(
                "this checkpoint's position in the training data was written by seqkd before the token store "
                "(a fairseq2 pipeline state); finish the stage with that version, or train it again with --force-stage <stage>"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
