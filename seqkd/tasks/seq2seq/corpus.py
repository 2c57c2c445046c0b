"""Text pairs, and the line-aligned file pairs every encoder-decoder task can read
(``train.en``/``train.ro``, CNN/DailyMail's ``train.source``/``train.target``).

Lines are read with ``seqkd.fileio.read_lines`` (UTF-8, gzip, ``file:line`` errors).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from seqkd.errors import DataError
from seqkd.fileio import read_lines


@dataclass(frozen=True)
class Pair:
    source: str
    target: str


def read_parallel(source_path: Path, target_path: Path) -> Iterator[Pair]:
    """Yield pairs from two line-aligned files (e.g. ``train.en`` / ``train.ro``)."""
    for sources, targets in zip_longest(read_lines(source_path), read_lines(target_path)):
        if sources is None or targets is None:
            short, lines = (source_path, targets[0] - 1) if sources is None else (target_path, sources[0] - 1)
            raise DataError(
                f"{source_path} and {target_path} have different numbers of lines ({short} ends at line {lines})"
            )
        (lineno, source), (_, target) = sources, targets
        source, target = source.strip(), target.strip()
        if not source or not target:
            bad = source_path if not source else target_path
            raise DataError(f"{bad}:{lineno}: empty line in a parallel file")
        yield Pair(source, target)
