"""Reading summarization corpora: JSON lines, and the XSum release.

(CNN/DailyMail-style ``.source``/``.target`` files are line-aligned pairs:
``seqkd.tasks.seq2seq.corpus.read_parallel``.) Every problem is reported with its file and line
(or file) before training starts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from seqkd.errors import DataError
from seqkd.fileio import read_json_lines
from seqkd.tasks.seq2seq.corpus import Pair

SPLITS = ("train", "valid", "test")
# XSum's split file names the validation split "validation"
XSUM_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
XSUM_SECTION = re.compile(r"^\[SN\]([A-Z-]+)\[SN\]\s*$", re.MULTILINE)


def _text(row: dict, field: str, path: Path, lineno: int) -> str:
    if field not in row:
        raise DataError(f"{path}:{lineno}: no field {field!r} (the object has: {', '.join(sorted(row)) or 'no fields'}); set the task's data.*_field")
    value = row[field]
    if not isinstance(value, str):
        raise DataError(f"{path}:{lineno}: field {field!r} is {type(value).__name__}, not a string")
    if not value.strip():
        raise DataError(f"{path}:{lineno}: field {field!r} is empty")
    return " ".join(value.split())


def read_jsonl(path: Path, document_field: str, summary_field: str, split_field: str | None = None) -> Iterator[tuple[str | None, Pair]]:
    """``(split, pair)`` per non-blank line; the split is the row's ``split_field`` (None without one)."""
    for lineno, row in read_json_lines(path):
        split = None
        if split_field is not None:
            split = row.get(split_field)
            if split not in SPLITS:
                raise DataError(f"{path}:{lineno}: field {split_field!r} is {split!r}; choose one of: {', '.join(SPLITS)}")
        yield split, Pair(_text(row, document_field, path, lineno), _text(row, summary_field, path, lineno))


def read_xsum_file(path: Path) -> Pair:
    """One ``<id>.summary`` file of the XSum release: ``[SN]FIRST-SENTENCE[SN]`` is the summary,
    ``[SN]RESTBODY[SN]`` the document."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (named by the XSum split file)") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    parts = XSUM_SECTION.split(text)
    sections = {name: " ".join(body.split()) for name, body in zip(parts[1::2], parts[2::2])}
    for name in ("FIRST-SENTENCE", "RESTBODY"):
        if not sections.get(name):
            raise DataError(f"{path}: no [SN]{name}[SN] section, or it is empty; is this an XSum .summary file?")
    return Pair(sections["RESTBODY"], sections["FIRST-SENTENCE"])


def read_xsum(folder: Path, split_file: Path) -> dict[str, list[Pair]]:
    """The XSum release: its split file (``{"train": [ids], "validation": [ids], "test": [ids]}``)
    and a folder of ``<id>.summary`` files."""
    try:
        ids = json.loads(split_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{split_file}: no such file") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{split_file}:{exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(ids, dict) or set(ids) != set(XSUM_SPLITS):
        raise DataError(f"{split_file}: expected an object with the keys {', '.join(XSUM_SPLITS)}")
    return {split: [read_xsum_file(folder / f"{name}.summary") for name in ids[key]] for key, split in XSUM_SPLITS.items()}
