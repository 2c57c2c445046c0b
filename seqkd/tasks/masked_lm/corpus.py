"""Reading unlabelled text: plain text (one example a line) or JSONL (a text field), plain or
gzipped, every error named by ``file:line``; and the held-out split taken by a hash of the text."""

from __future__ import annotations

import hashlib
from pathlib import Path

from seqkd.errors import DataError
from seqkd.fileio import read_json_lines, read_lines

SPLIT_NAMES = {"train": "train", "valid": "valid", "dev": "valid", "validation": "valid", "test": "test"}
HASH_SALT = "seqkd-masked-lm:"


def file_format(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return "jsonl" if suffixes and suffixes[-1] == ".jsonl" else "text"


def read_texts(path: Path, *, fmt: str | None, text_field: str, split_field: str | None = None) -> list[tuple[str | None, str]]:
    """``(split, text)`` of every example of a file (split from ``split_field``, else None).
    Blank lines of a text file and rows with an empty text are skipped."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    out: list[tuple[str | None, str]] = []
    if file_format(path, fmt) == "text":
        if split_field is not None:
            raise DataError(f"{path}: a plain text file has no split field; use a JSONL `corpus` or `train`/`valid` files")
        out = [(None, line.strip()) for _, line in read_lines(path) if line.strip()]
    else:
        for number, row in read_json_lines(path):
            where = f"{path}:{number}"
            if text_field not in row:
                raise DataError(f"{where}: no field {text_field!r} (text); the row has {', '.join(map(repr, row)) or 'none'}")
            text = row[text_field]
            if not isinstance(text, str):
                raise DataError(f"{where}: field {text_field!r} (text) is {type(text).__name__}, not text")
            split = None
            if split_field is not None:
                name = row.get(split_field)
                if name not in SPLIT_NAMES:
                    raise DataError(f"{where}: split {name!r} (field {split_field!r}) is not one of {', '.join(SPLIT_NAMES)}")
                split = SPLIT_NAMES[name]
            if text.strip():
                out.append((split, text.strip()))
    if not out:
        raise DataError(f"{path}: no text (the file is empty)")
    return out


def held_out(text: str, fraction: float) -> bool:
    """Whether a text belongs to the held-out share: a hash of the text, so duplicates stay together
    and the split never depends on the file's order."""
    digest = hashlib.sha1((HASH_SALT + text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 1_000_000 < fraction * 1_000_000
