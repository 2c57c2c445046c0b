"""Reading CoNLL-style NER files: tag schemes, repair, conversion and the deterministic split.

A file holds one ``token<TAB or space>...tag`` per line and a blank line between sentences;
``-DOCSTART-`` lines (CoNLL-2003 document markers) are skipped. Every error names ``file:line``, so
a user can fix the data rather than guess.

Columns are separated by runs of ASCII tabs and spaces (``COLUMN_SEPARATORS``), in tab-separated
and space-separated files alike. No other character separates columns: a full-width space (U+3000),
a no-break space (U+00A0) or any other Unicode space inside a token is part of the token, as
written. A line that holds nothing but whitespace of any kind ends a sentence. Files are UTF-8 (a
byte-order mark at the start is dropped) and may be gzipped (see ``seqkd.fileio.read_lines``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from seqkd.errors import DataError
from seqkd.fileio import read_lines

SCHEMES = ("BIO", "BIOES")
COLUMN_SEPARATORS = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class Sentence:
    tokens: list[str]
    tags: list[str]
    source: str  # "file:line" of the sentence's first token, for error messages


def _split_tag(tag: str, scheme: str, where: str) -> tuple[str, str | None]:
    """``("B", "person")`` for ``B-person``; ``("O", None)`` for ``O``; refuses tags outside ``scheme``."""
    if tag == "O":
        return "O", None
    prefix, dash, kind = tag.partition("-")
    if not dash or not kind or prefix not in scheme:
        raise DataError(f"{where}: tag {tag!r} is not in the {scheme} scheme (expected O or {'/'.join(scheme.replace('O', ''))}-TYPE)")
    return prefix, kind


def _repair(tags: list[str], scheme: str, repair: bool, wheres: list[str]) -> list[str]:
    """Turn an ``I-X`` that does not continue an entity of type X into ``B-X`` (or refuse).

    Such tags are common in hand-annotated tweets; read literally they start an entity, which is
    what conlleval does too, so repairing keeps every annotated entity.
    """
    out = list(tags)
    for i, tag in enumerate(tags):
        prefix, kind = _split_tag(tag, scheme, wheres[i])
        if prefix not in ("I", "E"):
            continue
        prev_prefix, prev_kind = _split_tag(out[i - 1], scheme, wheres[i - 1]) if i else ("O", None)
        if prev_kind == kind and prev_prefix in ("B", "I"):
            continue
        if not repair:
            before = out[i - 1] if i else "the sentence start"
            raise DataError(f"{wheres[i]}: {tag} follows {before}; set `repair: true` to read it as the start of an entity")
        out[i] = ("B-" if prefix == "I" or scheme == "BIO" else "S-") + kind
    return out


def to_bio(tags: list[str]) -> list[str]:
    """BIOES (or BIO) tags as BIO: S- becomes B-, E- becomes I-."""
    return [("B-" + t[2:]) if t.startswith("S-") else ("I-" + t[2:]) if t.startswith("E-") else t for t in tags]


def to_bioes(tags: list[str]) -> list[str]:
    """Well-formed BIO tags as BIOES: single-token entities S-, last tokens E-."""
    bio = to_bio(tags)
    out = []
    for i, tag in enumerate(bio):
        nxt = bio[i + 1] if i + 1 < len(bio) else "O"
        ends = nxt != "I-" + tag[2:]
        if tag.startswith("B-"):
            out.append(("S-" if ends else "B-") + tag[2:])
        elif tag.startswith("I-"):
            out.append(("E-" if ends else "I-") + tag[2:])
        else:
            out.append(tag)
    return out


def convert(tags: list[str], scheme: str) -> list[str]:
    return to_bioes(tags) if scheme == "BIOES" else to_bio(tags)


def split_columns(line: str) -> list[str]:
    """The columns of a non-blank line: split at runs of tabs and spaces, nothing else."""
    return COLUMN_SEPARATORS.split(line.strip(" \t"))


def _text_lines(text: str) -> list[tuple[int, str]]:
    """Numbered lines of already-decoded text, split as ``read_lines`` splits a file."""
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [(number, line.removesuffix("\r")) for number, line in enumerate(lines, 1)]


def read_conll(
    path: Path, *, tag_column: int, scheme: str, repair: bool, text: str | None = None
) -> list[Sentence]:
    """The sentences of a CoNLL file, tags checked against ``scheme`` and repaired (see ``_repair``).

    ``text`` replaces reading ``path`` (the built-in corpus is read from an installed package);
    ``path`` still names the data in messages.
    """
    lines: Iterable[tuple[int, str]] = read_lines(path) if text is None else _text_lines(text)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    wheres: list[str] = []

    def close() -> None:
        if tokens:
            fixed = _repair(tags, scheme, repair, wheres)
            sentences.append(Sentence(list(tokens), fixed, wheres[0]))
            tokens.clear()
            tags.clear()
            wheres.clear()

    for number, line in lines:
        where = f"{path}:{number}"
        if not line.strip():
            close()
            continue
        fields = split_columns(line)
        if fields[0] == "-DOCSTART-":
            continue
        if len(fields) < 2:
            raise DataError(f"{where}: expected `token<TAB>tag`, got {line.strip()!r}")
        try:
            tag = fields[tag_column]
        except IndexError:
            raise DataError(f"{where}: no column {tag_column} in {line.strip()!r}") from None
        if tag_column in (0, -len(fields)):
            raise DataError(f"{where}: tag_column {tag_column} is the token column")
        _split_tag(tag, scheme, where)
        tokens.append(fields[0])
        tags.append(tag)
        wheres.append(where)
    close()
    if not sentences:
        raise DataError(f"{path}: no sentences (the file is empty)")
    return sentences


def split_of(sentence: Sentence, valid_fraction: float, test_fraction: float) -> str:
    """``train``/``valid``/``test`` from a hash of the tokens: stable across runs and machines."""
    digest = hashlib.sha256(" ".join(sentence.tokens).encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if u < test_fraction else "valid" if u < test_fraction + valid_fraction else "train"
