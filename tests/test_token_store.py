"""The memory-mapped token store of the text encoder-decoder tasks: what it holds, when it is
rebuilt, that damage is caught, and that its batches are the in-memory path's, resumed or not."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqkd.tasks.seq2seq.batching import _pipeline, bucket_batches
from seqkd.tasks.seq2seq.store import StoreError, TokenStore
from seqkd.tasks.seq2seq.vocab import BOS, EOS
from seqkd.tasks.translation.adapter import TranslationTask
from seqkd.tasks.translation.config import TranslationConfig
from tests.conftest import CORPUS

PAIRS = 2500


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The first pairs of the Bible corpus (a small corpus keeps the vocabulary fast)."""
    path = tmp_path_factory.mktemp("corpus") / "small.tsv"
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        path.write_text("".join(itertools.islice(f, PAIRS)), encoding="utf-8")
    return path


def make_task(root: Path, corpus: Path, *, store: bool = True, **changes) -> TranslationTask:
    config = TranslationConfig(
        source_lang="en", target_lang="es", data={"corpus": str(corpus)}, vocab_size=300, max_seq_len=40, **changes
    )
    task = TranslationTask(config, root / "shared", root)
    task.token_store = store
    return task


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus) -> tuple[TranslationTask, TranslationTask]:
    """The same task on the store and on the in-memory lists, sharing one vocabulary."""
    root = tmp_path_factory.mktemp("store")
    stored = make_task(root, corpus)
    stored.prepare()
    memory = make_task(root, corpus, store=False)
    memory.prepare()
    return stored, memory


def batches_equal(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for name in ("source", "target_in", "target_out", "indices"):
            tx, ty = getattr(x, name), getattr(y, name)
            assert tx.dtype == ty.dtype and torch.equal(tx, ty), name
        assert (x.source_lens, x.target_lens) == (y.source_lens, y.target_lens)


def test_store_round_trips_token_ids_and_lengths(built):
    stored, memory = built
    folders = list(stored.workdir.glob("tokens-*"))
    assert len(folders) == 1 and not list(stored.workdir.glob("*.partial"))
    manifest = json.loads((folders[0] / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16"
    for split in ("train", "valid", "test"):
        old, new = memory._examples(split), stored._examples(split)
        assert len(old) == len(new) == manifest["splits"][split]["examples"]
        assert manifest["splits"][split]["pairs"] == len(memory.pairs()[split])
        for i in (0, len(old) // 2, len(old) - 1):
            assert new[i]["index"] == old[i]["index"] == i
            assert torch.equal(new[i]["source"], old[i]["source"]) and torch.equal(new[i]["target"], old[i]["target"])
        assert new[-1]["target"][0] == BOS and new[-1]["target"][-1] == EOS and new[-1]["source"][-1] == EOS
        lengths = new.lengths("target")
        assert lengths.tolist() == [len(e["target"]) for e in old]
    # every example of the split, through the flat arrays
    old = memory._examples("valid")
    assert [e["source"].tolist() for e in stored._examples("valid")[:]] == [e["source"].tolist() for e in old]


def test_batches_equal_the_in_memory_path(built):
    stored, memory = built
    batches_equal(stored.valid_batches(600), memory.valid_batches(600))
    batches_equal(stored.indexed_batches("train", 100, 900, 500), memory.indexed_batches("train", 100, 900, 500))
    a, b = iter(stored.train_reader(700, seed=3)), iter(memory.train_reader(700, seed=3))
    n = len(list(_pipeline(memory._examples("train"), 700, 40, 0, 3, "target")))
    batches_equal([next(a) for _ in range(n + 5)], [next(b) for _ in range(n + 5)])  # into the second epoch
    # teacher targets replacing some examples' (sequence-level KD), next to the originals
    distilled = {i: [5 + i % 7] * (1 + i % 9) for i in range(0, len(stored._examples("train")), 3)}
    distilled[1] = []  # nothing generated: left out
    a = iter(stored.train_reader(900, seed=5, target_sets=[None, distilled]))
    b = iter(memory.train_reader(900, seed=5, target_sets=[None, distilled]))
    batches_equal([next(a) for _ in range(30)], [next(b) for _ in range(30)])


def test_bucketing_follows_fairseq2():
    rng = np.random.default_rng(0)
    for _ in range(5):
        lengths = rng.integers(2, 70, int(rng.integers(1, 2000)))
        examples = [{"source": torch.zeros(2), "target": torch.zeros(int(n)), "index": i} for i, n in enumerate(lengths)]
        expected = [b.indices.tolist() for b in _pipeline(examples, 1024, 48, 0, None, "target")]
        assert [b.tolist() for b in bucket_batches(lengths, 1024, 48)] == expected


def test_resuming_mid_epoch_yields_the_same_next_batches(built):
    stored, _ = built
    reader = stored.train_reader(700, seed=11)
    stream = iter(reader)
    for _ in range(7):
        next(stream)
    state = json.loads(json.dumps(reader.state_dict()))  # plain values: a weights_only checkpoint holds them
    expected = [next(stream) for _ in range(6)]
    resumed = stored.train_reader(700, seed=11)
    resumed.load_state_dict(state)
    batches_equal([b for b, _ in zip(resumed, range(6))], expected)


def test_store_is_reused_and_rebuilt_when_data_or_vocabulary_change(tmp_path, corpus, built):
    stored, _ = built
    folder = next(stored.workdir.glob("tokens-*"))
    again = make_task(stored.base_dir, corpus)
    before = folder.stat().st_mtime_ns
    again.prepare()
    assert next(again.workdir.glob("tokens-*")) == folder and folder.stat().st_mtime_ns == before
    # other data: another store
    changed = tmp_path / "changed.tsv"
    changed.write_text(corpus.read_text(encoding="utf-8").replace("God", "Dios"), encoding="utf-8")
    other = make_task(stored.base_dir, changed)
    other.prepare()
    # another vocabulary of the same data: another store
    resized = make_task(stored.base_dir, corpus, vocab_model="bpe")
    resized.prepare()
    assert len(set(stored.workdir.glob("tokens-*"))) == 3
    assert len(other._examples("train")) > 0 and len(resized._examples("train")) > 0


def test_damaged_store_is_refused_naming_the_file(tmp_path, corpus):
    task = make_task(tmp_path, corpus)
    task.prepare()
    folder = next(task.workdir.glob("tokens-*"))
    parts = {"data": task._data_fingerprint(), "vocabulary": task.vocabulary_id()}
    tokens = folder / "train.target.tokens"
    data = tokens.read_bytes()
    tokens.write_bytes(data[:-2])
    with pytest.raises(StoreError, match=r"train\.target\.tokens: truncated"):
        make_task(tmp_path, corpus).prepare()
    tokens.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(StoreError, match=r"train\.target\.tokens: corrupted"):
        TokenStore.open(folder, parts)
    TokenStore.open(folder, parts, hashes=False)  # the other ranks check sizes only
    tokens.write_bytes(data)
    offsets = folder / "valid.source.offsets"
    raw = bytearray(offsets.read_bytes())
    raw[8:16] = (10**9).to_bytes(8, "little")
    offsets.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"valid\.source\.offsets"):
        TokenStore.open(folder, parts, hashes=False)
