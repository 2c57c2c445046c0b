"""Reading parallel corpora in TSV (line-aligned file pairs: ``seqkd.tasks.seq2seq.corpus``) and splitting them.

Every line is checked as it is read, so a malformed line is reported with its file and line number
before any training starts. Files are UTF-8 (a byte-order mark at the start is dropped, bytes that
are not UTF-8 are reported as ``file:line``); gzipped files are read transparently, and a truncated
or mislabelled ``.gz`` is reported by name (see ``seqkd.fileio.read_lines``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from seqkd.errors import DataError
from seqkd.fileio import read_lines
from seqkd.tasks.seq2seq.corpus import Pair


def read_tsv(path: Path, source_column: int, target_column: int) -> Iterator[Pair]:
    """Yield pairs from a TSV file; columns are 0-based."""
    needed = max(source_column, target_column) + 1
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < needed:
            raise DataError(f"{path}:{lineno}: expected at least {needed} tab-separated columns, found {len(fields)}")
        source, target = fields[source_column].strip(), fields[target_column].strip()
        if not source or not target:
            side = "source" if not source else "target"
            raise DataError(f"{path}:{lineno}: empty {side} text")
        yield Pair(source, target)


def split_of(source: str, valid_fraction: float, test_fraction: float) -> str:
    """Deterministic split by a hash of the normalised source text.

    Hashing the text rather than the position keeps the split stable when the corpus is reordered
    and puts repeated source sentences in one split, so no test source is ever seen in training.
    """
    key = " ".join(source.lower().split()).encode("utf-8")
    bucket = int.from_bytes(hashlib.sha1(key).digest()[:8], "big") / 2**64
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + valid_fraction:
        return "valid"
    return "train"
