"""Reading and splitting the real corpus; bad data gets a file:line message."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from seqkd.errors import DataError
from seqkd.tasks.translation.adapter import TranslationTask
from seqkd.tasks.translation.config import TranslationConfig
from seqkd.tasks.seq2seq.corpus import read_parallel
from seqkd.tasks.translation.corpus import read_tsv, split_of
from tests.conftest import CORPUS


def task(tmp_path: Path, **data) -> TranslationTask:
    config = TranslationConfig(source_lang="en", target_lang="es", data=data, vocab_size=200)
    return TranslationTask(config, tmp_path / "shared", tmp_path)


def test_bible_split_is_deterministic_disjoint_and_large_enough(tmp_path):
    pairs = task(tmp_path, corpus=str(CORPUS)).pairs()
    assert len(pairs["test"]) >= 1000 and len(pairs["valid"]) >= 500
    sources = {split: {p.source.lower() for p in items} for split, items in pairs.items()}
    assert not sources["train"] & sources["test"]
    assert not sources["train"] & sources["valid"]
    assert not sources["valid"] & sources["test"]
    assert sum(len(v) for v in pairs.values()) == 30998
    again = task(tmp_path, corpus=str(CORPUS)).pairs()
    assert [p.source for p in again["test"]] == [p.source for p in pairs["test"]]


def test_split_ignores_case_and_spacing():
    assert split_of("In the  beginning", 0.1, 0.1) == split_of("in the beginning", 0.1, 0.1)


def test_malformed_tsv_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("a.1\tHello\tHola\na.2\tonly two columns\na.3\tx\ty\n")
    with pytest.raises(DataError, match=r"bad\.tsv:2: expected at least 3 tab-separated columns, found 2"):
        list(read_tsv(path, 1, 2))


def test_empty_target_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write("a.1\tHello\tHola\na.2\tHello\t \n")
    with pytest.raises(DataError, match=r"bad\.tsv\.gz:2: empty target text"):
        list(read_tsv(path, 1, 2))


def test_parallel_files_of_different_length_are_refused(tmp_path):
    (tmp_path / "t.en").write_text("a\nb\nc\n")
    (tmp_path / "t.es").write_text("x\ny\n")
    with pytest.raises(DataError, match="different numbers of lines"):
        list(read_parallel(tmp_path / "t.en", tmp_path / "t.es"))


def test_too_small_data_is_refused(tmp_path):
    path = tmp_path / "small.tsv"
    path.write_text("".join(f"v.{i}\tsentence {i}\tfrase {i}\n" for i in range(50)))
    with pytest.raises(DataError, match=r"the train split has \d+ pairs; at least 100 are needed"):
        task(tmp_path, corpus=str(path)).pairs()


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(DataError, match="the train split has 0 pairs"):
        task(tmp_path, corpus=str(tmp_path / "empty.tsv")).pairs()


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.tsv: no such file"):
        task(tmp_path, corpus="nope.tsv").fingerprint()
