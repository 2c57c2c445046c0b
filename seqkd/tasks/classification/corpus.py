"""Reading labelled texts from JSONL, TSV and CSV files, every error named by ``file:line``.

JSONL holds one object per line; TSV and CSV name their columns in the first row (GLUE's files do).
Files are UTF-8 and may be gzipped (``seqkd.fileio.read_lines``). A row with an empty text, a
missing field or a label that is not a string or number is refused, naming its line, so a user
fixes the data rather than trains on it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqkd.errors import DataError
from seqkd.fileio import read_json_lines, read_lines

SPLIT_NAMES = {"train": "train", "valid": "valid", "dev": "valid", "validation": "valid", "test": "test"}


@dataclass(frozen=True)
class Example:
    text: str
    pair: str | None  # the second text of a sentence pair
    label: str
    source: str  # "file:line", for messages
    translations: dict[str, str] = field(default_factory=dict)  # language -> the text translated


def file_format(path: Path, given: str | None) -> str:
    """``given``, or the format the file's name says (``x.tsv.gz`` is TSV)."""
    if given is not None:
        return given
    suffixes = [s for s in path.suffixes if s != ".gz"]
    name = suffixes[-1].lstrip(".") if suffixes else ""
    if name in ("jsonl", "tsv", "csv"):
        return name
    raise DataError(f"{path}: cannot tell the format from the name; set `format:` to jsonl, tsv or csv")


def _rows(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)``: JSONL objects, or TSV/CSV rows keyed by the header's column names."""
    if fmt == "jsonl":
        yield from read_json_lines(path)
        return
    lines = read_lines(path)
    delimiter = "\t" if fmt == "tsv" else ","
    # TSV fields are taken as written (GLUE's TSVs hold unbalanced quotes); CSV follows RFC 4180
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    header: list[str] | None = None
    for number, line in lines:
        if not line.strip():
            continue
        fields = next(csv.reader([line], delimiter=delimiter, quoting=quoting))
        if header is None:
            header = fields
            continue
        if len(fields) != len(header):
            raise DataError(f"{path}:{number}: {len(fields)} columns where the header has {len(header)}")
        yield number, dict(zip(header, fields))


def _field(row: dict[str, Any], name: str, where: str, what: str) -> str:
    if name not in row:
        raise DataError(f"{where}: no field {name!r} ({what}); the row has {', '.join(map(repr, row)) or 'none'}")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: field {name!r} ({what}) is {type(value).__name__}, not text")
    return str(value)


def read_examples(
    path: Path, *, fmt: str | None, text_field: str, pair_field: str | None, label_field: str,
    split_field: str | None = None, translations_field: str | None = None,
) -> list[tuple[str | None, Example]]:
    """The examples of a file, each with its split (from ``split_field``; ``None`` without one) and,
    with ``translations_field`` (JSONL), its translations (a row may have none)."""
    out: list[tuple[str | None, Example]] = []
    fmt = file_format(path, fmt)
    if translations_field is not None and fmt != "jsonl":
        raise DataError(f"{path}: `translations_field` needs a JSONL file (a {{language: text}} object per row)")
    for number, row in _rows(path, fmt):
        where = f"{path}:{number}"
        text = _field(row, text_field, where, "text").strip()
        pair = _field(row, pair_field, where, "pair text").strip() if pair_field else None
        if not text or pair == "":
            raise DataError(f"{where}: empty text; remove the row or fill it in")
        label = _field(row, label_field, where, "label").strip()
        if not label:
            raise DataError(f"{where}: empty label")
        split = None
        if split_field is not None:
            name = _field(row, split_field, where, "split")
            if name not in SPLIT_NAMES:
                raise DataError(f"{where}: split {name!r} is not one of {', '.join(SPLIT_NAMES)}")
            split = SPLIT_NAMES[name]
        translations = _translations(row.get(translations_field, {}), where, translations_field) if translations_field else {}
        out.append((split, Example(text, pair, label, where, translations)))
    if not out:
        raise DataError(f"{path}: no examples (the file is empty)")
    return out


def _translations(value: Any, where: str, name: str) -> dict[str, str]:
    """A row's ``{language: text}`` object, empty texts left out."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise DataError(f"{where}: field {name!r} (translations) must map languages to texts, e.g. {{\"de\": \"...\"}}")
    return {lang: text.strip() for lang, text in value.items() if text.strip()}
