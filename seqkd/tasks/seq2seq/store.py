"""The encoded corpus of a text encoder-decoder task as memory-mapped token arrays, built once per
machine and shared by every process.

A store lives in the task's shared folder (``<output.dir>/_shared``), one folder per data
fingerprint and vocabulary::

    tokens-<data fingerprint>-<vocabulary digest>/
        manifest.json               format, key parts, token dtype, per split: examples, pairs
                                    read, documents truncated, and bytes + sha256 of every file
        <split>.source.tokens       the split's source token ids (EOS included), one flat array
        <split>.source.offsets      int64, examples + 1 entries: example i is tokens[o[i]:o[i+1]]
        <split>.target.tokens       BOS + target ids + EOS of each example, flat
        <split>.target.offsets

Token arrays are ``uint16`` when the vocabulary has at most 65,536 pieces, else ``int32``. The
examples are those ``Seq2SeqTask._examples`` keeps (pairs too long for the model left out), in
data order, so example ``i`` of the store is the example with ``index`` ``i``: the dense row
numbers teacher-output caches are keyed by.

Building streams the corpus in chunks (read, encode with sentencepiece in batches, append), so its
memory does not grow with the corpus. It writes into ``<folder>.partial`` and renames that to the
final folder once the manifest is written, so a store is either complete or absent. Rank 0 builds
(the engine prepares tasks with ``distributed.main_first``); every rank then maps the same files
with ``numpy.memmap``, so the pages are the operating system's page cache, one copy per machine.

Opening checks every file's size and the offsets (start at 0, never fall, end at the token count)
in every process; the sha256 of every file is checked by rank 0 (or a single process) each time it
opens the store — about a second per GB of tokens — and by the other ranks of a multi-process run
never (they open it after rank 0 has). A damaged store is refused with a message naming the file.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqkd.cache import CHECKSUM, CacheError, manifest_checksum, make_key
from seqkd.fileio import CorruptFileError, fsync_path, atomic_write_json, read_json
from seqkd.hashing import file_sha256

FORMAT = "seqkd-tokens/1"
MANIFEST = "manifest.json"
SIDES = ("source", "target")
CHUNK_PAIRS = 20_000  # pairs encoded per sentencepiece call while building
CLEAN = "remove the folder to rebuild it"


class StoreError(CacheError):
    """A token store that cannot be read as it stands (damaged, edited, of another format)."""


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def store_dir(workdir: Path, data_fingerprint: str, vocabulary_id: str) -> Path:
    return workdir / f"tokens-{data_fingerprint}-{vocabulary_id}"


class _Writer:
    """One file appended to in chunks, hashed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path, self.sha, self.bytes = path, hashlib.sha256(), 0
        self.file = path.open("wb")

    def write(self, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array).tobytes()
        self.file.write(data)
        self.sha.update(data)
        self.bytes += len(data)

    def close(self) -> dict[str, Any]:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return {"bytes": self.bytes, "sha256": self.sha.hexdigest()}


EncodeChunk = Callable[[list[Any]], tuple[list[list[int]], list[list[int]], int]]


def build_store(
    folder: Path,
    parts: dict[str, str],
    vocab_size: int,
    pairs: Iterable[tuple[str, Any]],
    encode: EncodeChunk,
    keep: Callable[[int, int], bool],
    splits: tuple[str, ...] = ("train", "valid", "test"),
) -> None:
    """Write a store from ``(split, pair)`` items in data order. ``encode(pairs)`` gives the source
    ids (EOS included), the target ids (BOS and EOS included) and how many sources it cut;
    ``keep(source_len, target_len)`` says which examples the store holds."""
    dtype = token_dtype(vocab_size)
    work = folder.with_name(folder.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    writers = {(s, side, kind): _Writer(work / f"{s}.{side}.{kind}") for s in splits for side in SIDES for kind in ("tokens", "offsets")}
    ends = {(s, side): 0 for s in splits for side in SIDES}
    counts = {s: {"examples": 0, "pairs": 0, "truncated": 0} for s in splits}
    for s in splits:
        for side in SIDES:
            writers[s, side, "offsets"].write(np.zeros(1, np.int64))

    def flush(split: str, chunk: list[Any]) -> None:
        sources, targets, cut = encode(chunk)
        kept = [(src, tgt) for src, tgt in zip(sources, targets) if keep(len(src), len(tgt))]
        counts[split]["pairs"] += len(chunk)
        counts[split]["truncated"] += cut
        counts[split]["examples"] += len(kept)
        for side, rows in zip(SIDES, zip(*kept) if kept else ((), ())):
            lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
            flat = np.fromiter(itertools.chain.from_iterable(rows), np.int64, int(lengths.sum()))
            if len(flat) and (flat.min() < 0 or flat.max() >= vocab_size):
                raise ValueError(f"token ids outside the vocabulary of {vocab_size}")
            writers[split, side, "tokens"].write(flat.astype(dtype))
            writers[split, side, "offsets"].write(ends[split, side] + np.cumsum(lengths))
            ends[split, side] += int(lengths.sum())

    try:
        chunks: dict[str, list[Any]] = {s: [] for s in splits}
        for split, pair in pairs:
            chunks[split].append(pair)
            if len(chunks[split]) >= CHUNK_PAIRS:
                flush(split, chunks[split])
                chunks[split] = []
        for split, chunk in chunks.items():
            if chunk:
                flush(split, chunk)
        files = {f"{s}.{side}.{kind}": w.close() for (s, side, kind), w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.file.close()
        shutil.rmtree(work, ignore_errors=True)
        raise
    manifest = {
        "format": FORMAT, "key": make_key(parts), "parts": parts, "dtype": dtype.name, "vocab_size": vocab_size,
        "splits": {s: {**counts[s], "files": {n: files[n] for n in sorted(files) if n.startswith(f"{s}.")}} for s in splits},
    }
    atomic_write_json(work / MANIFEST, {**manifest, CHECKSUM: manifest_checksum(manifest)})
    fsync_path(work)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(work, folder)
    fsync_path(folder.parent)


class TokenStore:
    """An opened, verified store: per split a :class:`StoredSplit` of memory-mapped arrays."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder, self.manifest = folder, manifest
        self.dtype = np.dtype(manifest["dtype"])
        self._splits: dict[str, StoredSplit] = {}

    @classmethod
    def open(cls, folder: Path, parts: dict[str, str], *, hashes: bool = True) -> "TokenStore":
        """Open a store, refused (``StoreError`` naming the file) unless its key is ``parts`` and every
        file has its recorded size (and, with ``hashes``, its sha256) and consistent offsets."""
        path = folder / MANIFEST
        if not path.exists():
            raise StoreError(f"{folder}: no finished token store here")
        try:
            manifest = read_json(path, "token store manifest", fix=CLEAN)
        except CorruptFileError as exc:
            raise StoreError(str(exc)) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise StoreError(f"{path}: not a seqkd token store ({FORMAT}); {CLEAN}")
        if manifest.get(CHECKSUM) != manifest_checksum(manifest):
            raise StoreError(f"{path} was modified after it was written (checksum mismatch); {CLEAN}")
        if manifest["key"] != make_key(parts):
            raise StoreError(f"{folder}: built for other inputs ({manifest['parts']}, this run needs {parts}); {CLEAN}")
        store = cls(folder, manifest)
        for split, entry in manifest["splits"].items():
            for name, meta in entry["files"].items():
                file = folder / name
                size = file.stat().st_size if file.exists() else None
                if size is None:
                    raise StoreError(f"{file}: missing token store file; {CLEAN}")
                if size != meta["bytes"]:
                    raise StoreError(f"{file}: truncated or altered ({size} bytes, the manifest says {meta['bytes']}); {CLEAN}")
                if hashes and file_sha256(file) != meta["sha256"]:
                    raise StoreError(f"{file}: corrupted (sha256 differs from the manifest); {CLEAN}")
            store.split(split)._check()
        return store

    def split(self, split: str) -> "StoredSplit":
        if split not in self._splits:
            if split not in self.manifest["splits"]:
                raise StoreError(f"{self.folder}: no {split} split")
            self._splits[split] = StoredSplit(self, split)
        return self._splits[split]

    def info(self, split: str) -> dict[str, int]:
        return {k: v for k, v in self.manifest["splits"][split].items() if k != "files"}


def _map(path: Path, dtype: np.dtype) -> np.ndarray:
    count = path.stat().st_size // dtype.itemsize
    if count == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


class StoredSplit:
    """One split's examples, read from the memory-mapped arrays on demand.

    It is a sequence of examples (``len``, ``[i]``, ``[start:stop]`` give the dicts the in-memory
    path builds); batching reads ``lengths`` and materialises only the rows of a batch (``rows``).
    """

    def __init__(self, store: TokenStore, split: str) -> None:
        self.store, self.split = store, split
        self.tokens = {side: _map(store.folder / f"{split}.{side}.tokens", store.dtype) for side in SIDES}
        self.offsets = {side: _map(store.folder / f"{split}.{side}.offsets", np.dtype(np.int64)) for side in SIDES}
        self._lengths: dict[str, np.ndarray] = {}

    def _check(self) -> None:
        examples = self.store.manifest["splits"][self.split]["examples"]
        for side in SIDES:
            offsets, path = self.offsets[side], self.store.folder / f"{self.split}.{side}.offsets"
            if len(offsets) != examples + 1 or offsets[0] != 0 or int(offsets[-1]) != len(self.tokens[side]):
                raise StoreError(f"{path}: {len(offsets)} offsets do not index {examples} examples of {len(self.tokens[side])} tokens; {CLEAN}")
            if bool((self.lengths(side) <= 0).any()):
                raise StoreError(f"{path}: offsets do not rise; {CLEAN}")

    def __len__(self) -> int:
        return len(self.offsets["source"]) - 1

    def lengths(self, side: str) -> np.ndarray:
        """Tokens of each example's ``side`` (int32, computed once from the offsets)."""
        if side not in self._lengths:
            self._lengths[side] = np.diff(self.offsets[side]).astype(np.int32)
        return self._lengths[side]

    def row(self, side: str, i: int) -> torch.Tensor:
        lo, hi = int(self.offsets[side][i]), int(self.offsets[side][i + 1])
        return torch.from_numpy(self.tokens[side][lo:hi].astype(np.int64))

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self)))]
        i = int(key)
        i = i + len(self) if i < 0 else i
        if not 0 <= i < len(self):
            raise IndexError(key)
        return {"source": self.row("source", i), "target": self.row("target", i), "index": i}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))
