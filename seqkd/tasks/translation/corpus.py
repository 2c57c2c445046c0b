"""Reading parallel corpora (TSV or a pair of line-aligned text files) and splitting them.

Every line is checked as it is read, so a malformed line is reported with its file and line number
before any training starts. Gzipped files are read transparently.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import IO

from seqkd.errors import DataError


@dataclass(frozen=True)
class Pair:
    source: str
    target: str


def _open(path: Path) -> IO[str]:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_tsv(path: Path, source_column: int, target_column: int) -> Iterator[Pair]:
    """Yield pairs from a TSV file; columns are 0-based."""
    needed = max(source_column, target_column) + 1
    with _open(path) as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < needed:
                raise DataError(
                    f"{path}:{lineno}: expected at least {needed} tab-separated columns, found {len(fields)}"
                )
            source, target = fields[source_column].strip(), fields[target_column].strip()
            if not source or not target:
                side = "source" if not source else "target"
                raise DataError(f"{path}:{lineno}: empty {side} text")
            yield Pair(source, target)


def read_parallel(source_path: Path, target_path: Path) -> Iterator[Pair]:
    """Yield pairs from two line-aligned files (e.g. ``train.en`` / ``train.ro``)."""
    with _open(source_path) as fs, _open(target_path) as ft:
        for lineno, (source, target) in enumerate(zip_longest(fs, ft), start=1):
            if source is None or target is None:
                raise DataError(
                    f"{source_path} and {target_path} have different numbers of lines "
                    f"({source_path if source is None else target_path} ends at line {lineno - 1})"
                )
            source, target = source.strip(), target.strip()
            if not source or not target:
                bad = source_path if not source else target_path
                raise DataError(f"{bad}:{lineno}: empty line in a parallel file")
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
