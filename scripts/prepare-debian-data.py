#!/usr/bin/env python3
"""Build the Debian package-description data sets shipped in data/debian-descriptions/.

Three data sets come out of Debian's archive index files (suite bookworm, component main):

* summarization.jsonl.gz  - English long description -> English synopsis;
* classification.jsonl.gz - English synopsis -> archive section, with the volunteer
  translations of the same synopsis (de, fr, it, da) for cross-lingual tests;
* pretraining.jsonl.gz    - unlabelled long descriptions in en, de, fr, it and da (a sample of
  each language, train and valid packages only) for masked-LM pre-training;

plus PROVENANCE.md (source, licence, rebuild command, checksums, statistics).

The index files are fetched with ``apt-get update`` into a temporary folder, so the system's
own apt state is never touched::

    .venv/bin/python scripts/prepare-debian-data.py               # fetch, then build
    .venv/bin/python scripts/prepare-debian-data.py --lists D/lists  # reuse fetched indices

Only the standard library is needed. Index files are fetched uncompressed
(``Acquire::GzipIndexes=false``); a ``--lists`` folder fetched with apt's defaults holds
``.lz4`` files, which are read with the ``lz4`` Python module when installed, else with the
``lz4`` command-line tool. ``.gz``, ``.xz`` and ``.bz2`` indices are read by the stdlib.

The output is deterministic: rows are sorted by package name, the split of a row comes from a
SHA-1 hash of its source package name (so binaries built from one source never straddle two
splits), and the gzip headers carry no time stamp or file name.
"""

from __future__ import annotations

import argparse
import bz2
import datetime as dt
import gzip
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Iterator

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "data" / "debian-descriptions"
LANGS = ("en", "de", "fr", "it", "da")
FOREIGN = ("de", "fr", "it", "da")

# Summarization filters.
MIN_DOCUMENT_WORDS = 40
MAX_DOCUMENT_WORDS = 500  # longer ones are inventories (CTAN packages, font lists, scripts)
NEAR_DUPLICATE_PREFIX = 150

# Classification: sections whose synopses name the section outright (a library, a language's
# module, documentation, fonts, debug symbols, translations, transitional or meta packages),
# so the label could be read off a single word. Everything else with enough data is kept.
GIVEAWAY_SECTIONS = frozenset({
    "libs", "libdevel", "oldlibs", "doc", "debug", "introspection", "metapackages", "tasks",
    "localization", "fonts", "perl", "python", "ruby", "javascript", "java", "golang", "rust",
    "haskell", "ocaml", "php", "lisp", "gnu-r", "r", "cli-mono",
})
MIN_SECTION_SIZE = 100

# Pre-training text: long descriptions of at least this many words, near-duplicates dropped per
# language, test-split packages left out (the zero-shot tests classify their synopses); a sample
# of each language in the order of a hash of the package name, so the shipped file stays small.
PRETRAIN_MIN_WORDS = 20
PRETRAIN_PER_LANGUAGE = {"train": 4000, "valid": 200}
PRETRAIN_SALT = "seqkd-debian-pretraining:"

# Splits: buckets of a SHA-1 hash of the source package name, out of 10,000.
SPLIT_SALT = "seqkd-debian-descriptions:"
VALID_BUCKETS = 500
TEST_BUCKETS = 500


def split_of(source: str) -> str:
    """The split ('train', 'valid' or 'test') of every row built from ``source``."""
    digest = hashlib.sha1((SPLIT_SALT + source).encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % 10_000
    if bucket < VALID_BUCKETS:
        return "valid"
    if bucket < VALID_BUCKETS + TEST_BUCKETS:
        return "test"
    return "train"


# --------------------------------------------------------------------------- fetching


def apt_command(root: Path) -> list[str]:
    return [
        "apt-get", "update",
        "-o", f"Dir::State::Lists={root / 'lists'}",
        "-o", f"Dir::Cache={root / 'cache'}",
        "-o", "Acquire::Languages=" + ",".join(LANGS),
        "-o", "Acquire::GzipIndexes=false",
    ]


def fetch(root: Path) -> tuple[Path, str]:
    """Run ``apt-get update`` into ``root``; returns the lists folder and the command shown."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # apt downloads as user _apt, which must reach lists/partial
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    command = apt_command(root)
    print("+", shlex.join(command), file=sys.stderr)
    subprocess.run(command, check=True, stdout=sys.stderr)
    return root / "lists", shlex.join(apt_command(Path("D")))


# --------------------------------------------------------------------------- reading


def read_bytes(path: Path) -> bytes:
    """The decompressed content of an index file, whatever apt stored it as."""
    name = path.name
    if name.endswith(".lz4"):
        try:
            import lz4.frame  # type: ignore[import-not-found]
        except ImportError:
            if shutil.which("lz4") is None:
                sys.exit(f"{path}: needs the lz4 Python module or the lz4 tool "
                         "(or fetch again: the script asks apt for uncompressed indices)")
            return subprocess.run(["lz4", "-dc", str(path)], check=True,
                                  stdout=subprocess.PIPE).stdout
        return lz4.frame.decompress(path.read_bytes())
    if name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".xz") or name.endswith(".lzma"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".bz2"):
        return bz2.decompress(path.read_bytes())
    return path.read_bytes()


def find_index(lists: Path, suite: str, component: str, what: str) -> Path:
    """The one index file ``*_dists_<suite>_<component>_<what>[.compression]`` in ``lists``."""
    pattern = re.compile(
        rf"_dists_{re.escape(suite)}_{re.escape(component)}_{re.escape(what)}"
        r"(\.(lz4|gz|xz|lzma|bz2))?$")
    hits = sorted(p for p in lists.iterdir() if p.is_file() and pattern.search(p.name))
    if not hits:
        sys.exit(f"no {suite}/{component} {what} index in {lists}")
    if len(hits) > 1:
        sys.exit(f"several {suite}/{component} {what} indices in {lists}: "
                 + ", ".join(p.name for p in hits))
    return hits[0]


def find_release(lists: Path, suite: str) -> Path | None:
    for name in ("InRelease", "Release"):
        hits = sorted(lists.glob(f"*_dists_{suite}_{name}"))
        if hits:
            return hits[0]
    return None


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs; a field's continuation lines keep their text after the first space."""
    fields: dict[str, str] = {}
    key = None
    for line in text.split("\n"):
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                fields[key] += "\n" + line[1:]
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if fields:
        yield fields


def clean(text: str) -> str:
    return " ".join(text.split())


def split_description(value: str) -> tuple[str, str]:
    """(synopsis, long description) of a Description field.

    Continuation lines are joined into paragraphs; a line " ." ends a paragraph; whitespace
    inside a paragraph is collapsed; paragraphs are joined with a newline.
    """
    first, _, rest = value.partition("\n")
    paragraphs, current = [], []
    for line in rest.split("\n"):
        if line.strip() == ".":
            if current:
                paragraphs.append(clean(" ".join(current)))
            current = []
        elif line.strip():
            current.append(line)
    if current:
        paragraphs.append(clean(" ".join(current)))
    return clean(first), "\n".join(p for p in paragraphs if p)


def read_translations(path: Path, lang: str) -> list[dict[str, str]]:
    """Rows {package, md5, synopsis, long} of a Translation-<lang> index."""
    rows = []
    field = f"Description-{lang}"
    for st in stanzas(read_bytes(path).decode("utf-8")):
        if "Package" not in st or "Description-md5" not in st or field not in st:
            continue
        synopsis, long = split_description(st[field])
        rows.append({"package": st["Package"], "md5": st["Description-md5"],
                     "synopsis": synopsis, "long": long})
    return rows


def read_packages(path: Path) -> dict[str, dict[str, str]]:
    """package -> {section, md5, source, synopsis} from a Packages index (first stanza wins)."""
    out: dict[str, dict[str, str]] = {}
    for st in stanzas(read_bytes(path).decode("utf-8")):
        name = st.get("Package")
        if not name or name in out:
            continue
        source = st.get("Source", name).split()[0]  # "Source: foo (1.2-3)"
        out[name] = {
            "section": st.get("Section", "").split("/")[-1],  # contrib/net, non-free/games
            "md5": st.get("Description-md5", ""),
            "source": source,
            "synopsis": clean(st.get("Description", "").split("\n")[0]),
        }
    return out


# --------------------------------------------------------------------------- building

WORD = re.compile(r"\w+", re.UNICODE)


def build_summarization(english: list[dict[str, str]], packages: dict[str, dict[str, str]]):
    """Rows {package, source, split, document, summary} and a dict of counts."""
    by_package: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in english:
        by_package[row["package"]].append(row)
    chosen = []
    for name in sorted(by_package):
        candidates = by_package[name]
        md5 = packages.get(name, {}).get("md5")
        current = [r for r in candidates if r["md5"] == md5]
        chosen.append(current[0] if current else min(candidates, key=lambda r: r["md5"]))
    long_enough = [r for r in chosen
                   if r["synopsis"] and len(r["long"].split()) >= MIN_DOCUMENT_WORDS]
    in_range = [r for r in long_enough if len(r["long"].split()) <= MAX_DOCUMENT_WORDS]
    seen, rows = set(), []
    for r in in_range:  # sorted by package name: the first one of a near-duplicate group stays
        key = r["long"][:NEAR_DUPLICATE_PREFIX]
        if key in seen:
            continue
        seen.add(key)
        source = packages.get(r["package"], {}).get("source", r["package"])
        rows.append({"package": r["package"], "source": source, "split": split_of(source),
                     "document": r["long"], "summary": r["synopsis"]})
    counts = {"descriptions": len(chosen), "long_enough": len(long_enough),
              "in_range": len(in_range), "pairs": len(rows)}
    return rows, counts


def build_classification(english: list[dict[str, str]], packages: dict[str, dict[str, str]],
                         foreign: dict[str, dict[str, str]]):
    """Rows {package, source, split, text, label, translations} and a dict of details."""
    english_by_md5: dict[str, str] = {}
    for r in english:
        english_by_md5.setdefault(r["md5"], r["synopsis"])
    entries = []
    for name in sorted(packages):
        info = packages[name]
        text = english_by_md5.get(info["md5"]) or info["synopsis"]
        if text and info["section"]:
            entries.append((name, info, text))
    sections_of: dict[str, set[str]] = defaultdict(set)
    for _, info, text in entries:
        sections_of[text.casefold()].add(info["section"])
    unique, seen = [], set()
    for name, info, text in entries:
        key = text.casefold()
        if len(sections_of[key]) > 1 or key in seen:
            continue
        seen.add(key)
        unique.append((name, info, text))
    sizes = Counter(info["section"] for _, info, _ in unique)
    kept = sorted(s for s, n in sizes.items()
                  if s not in GIVEAWAY_SECTIONS and n >= MIN_SECTION_SIZE)
    too_small = sorted((s, n) for s, n in sizes.items()
                       if s not in GIVEAWAY_SECTIONS and n < MIN_SECTION_SIZE)
    rows = []
    untranslated: Counter[str] = Counter()
    for name, info, text in unique:
        if info["section"] not in kept:
            continue
        translations = {}
        for lang in FOREIGN:
            other = foreign[lang].get(info["md5"])
            if other and other.casefold() == text.casefold():
                untranslated[lang] += 1  # copied, not translated: useless for cross-lingual tests
            elif other:
                translations[lang] = other
        rows.append({"package": name, "source": info["source"], "split": split_of(info["source"]),
                     "text": text, "label": info["section"], "translations": translations})
    details = {
        "binary_packages": len(packages),
        "synopses": len(entries),
        "ambiguous": sum(1 for v in sections_of.values() if len(v) > 1),
        "unique": len(unique),
        "sections_all": sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])),
        "kept": kept,
        "too_small": too_small,
        "giveaway": sorted(s for s in sizes if s in GIVEAWAY_SECTIONS),
        "untranslated": untranslated,
    }
    return rows, details


def build_pretraining(translations: dict[str, list[dict[str, str]]], packages: dict[str, dict[str, str]]):
    """Rows {package, source, split, lang, text} and per-language counts.

    For each language: one description per package (the one the Packages index names when there
    are several), long descriptions of at least ``PRETRAIN_MIN_WORDS`` words, near-duplicates
    (same first ``NEAR_DUPLICATE_PREFIX`` characters) dropped, test-split packages left out; then
    the first ``PRETRAIN_PER_LANGUAGE[split]`` packages in the order of a SHA-1 hash of their name
    (one order for every language).
    """
    def order(name: str) -> str:
        return hashlib.sha1((PRETRAIN_SALT + name).encode("utf-8")).hexdigest()

    rows, counts = [], {}
    for lang in LANGS:
        by_package: dict[str, list[dict[str, str]]] = defaultdict(list)
        for r in translations[lang]:
            by_package[r["package"]].append(r)
        candidates = []
        for name in sorted(by_package):
            options = by_package[name]
            md5 = packages.get(name, {}).get("md5")
            current = [r for r in options if r["md5"] == md5]
            candidates.append(current[0] if current else min(options, key=lambda r: r["md5"]))
        long_enough = [r for r in candidates if len(r["long"].split()) >= PRETRAIN_MIN_WORDS]
        seen, unique = set(), []
        for r in long_enough:
            key = r["long"][:NEAR_DUPLICATE_PREFIX]
            if key not in seen:
                seen.add(key)
                unique.append(r)
        kept = []
        for split, limit in PRETRAIN_PER_LANGUAGE.items():
            pool = []
            for r in unique:
                source = packages.get(r["package"], {}).get("source", r["package"])
                if split_of(source) == split:
                    pool.append((order(r["package"]), r, source))
            pool.sort(key=lambda item: item[0])
            kept += [{"package": r["package"], "source": source, "split": split, "lang": lang, "text": r["long"]}
                     for _, r, source in pool[:limit]]
        kept.sort(key=lambda row: (row["package"], row["split"]))
        rows += kept
        counts[lang] = {"descriptions": len(candidates), "long_enough": len(long_enough), "unique": len(unique),
                        "train": sum(1 for r in kept if r["split"] == "train"),
                        "valid": sum(1 for r in kept if r["split"] == "valid"),
                        "words": mean([len(r["text"].split()) for r in kept])}
    return rows, counts


# --------------------------------------------------------------------------- writing


def write_jsonl_gz(path: Path, rows: Iterable[dict]) -> None:
    """Deterministic gzip: no time stamp, no file name in the header."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                               compresslevel=9, mtime=0) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    os.replace(tmp, path)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarization_stats(rows: list[dict]) -> dict:
    novel = total = 0
    novel_per_pair = []
    for r in rows:
        doc = {w.casefold() for w in WORD.findall(r["document"])}
        summ = {w.casefold() for w in WORD.findall(r["summary"])}
        missing = len(summ - doc)
        novel += missing
        total += len(summ)
        if summ:
            novel_per_pair.append(missing / len(summ))
    return {
        "document_words": mean([len(r["document"].split()) for r in rows]),
        "summary_words": mean([len(r["summary"].split()) for r in rows]),
        "novel_types": novel / total if total else 0.0,
        "novel_types_per_pair": mean(novel_per_pair),
        "splits": Counter(r["split"] for r in rows),
    }


def release_info(path: Path | None) -> dict[str, str]:
    info = {}
    if path is None:
        return info
    for line in path.read_text("utf-8", errors="replace").split("\n"):
        key, _, value = line.partition(":")
        if key in ("Origin", "Suite", "Version", "Codename", "Date") and key not in info:
            info[key] = value.strip()
        if line.startswith(("MD5Sum:", "SHA256:")):
            break
    return info


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(*, out: Path, apt_shown: str | None, lists: Path, release: dict[str, str],
               index_files: dict[str, tuple[Path, bytes]], built: str, seconds: float,
               summ_rows: list[dict], summ_counts: dict, summ_stats: dict,
               cls_rows: list[dict], cls_details: dict, pre_rows: list[dict], pre_counts: dict,
               rebuild: str) -> str:
    files = []
    for name in ("summarization.jsonl.gz", "classification.jsonl.gz", "pretraining.jsonl.gz"):
        data = (out / name).read_bytes()
        files.append([f"`{name}`", f"{len(data):,}", f"`{sha256_of(data)}`"])
    indices = [[f"`{label}`", f"`{path.name}`", f"{len(data):,}", f"`{sha256_of(data)}`"]
               for label, (path, data) in index_files.items()]
    splits_s = summ_stats["splits"]
    splits_c = Counter(r["split"] for r in cls_rows)
    per_section = Counter(r["label"] for r in cls_rows)
    per_lang = {lang: sum(1 for r in cls_rows if lang in r["translations"]) for lang in FOREIGN}
    by_split_lang = {lang: Counter(r["split"] for r in cls_rows if lang in r["translations"])
                     for lang in FOREIGN}
    example = next(r for r in summ_rows if r["package"] == "gri") \
        if any(r["package"] == "gri" for r in summ_rows) else summ_rows[0]
    fetched = (f"fetched with `{apt_shown}` (into a temporary folder `D`, created first with "
               "`mkdir -p D/lists/partial D/cache/archives/partial`; the system's apt state is "
               "not touched)") if apt_shown else f"read from an already fetched folder `{lists}`"
    rel = ", ".join(f"{k} `{v}`" for k, v in release.items()) or "(no Release file seen)"
    sections_all = ", ".join(f"{s} {n:,}" for s, n in cls_details["sections_all"])
    too_small = ", ".join(f"{s} {n}" for s, n in cls_details["too_small"]) or "none"
    pre_table = table(
        ["language", "descriptions", f"≥ {PRETRAIN_MIN_WORDS} words", "unique", "train", "valid", "mean words"],
        [[lang, f"{c['descriptions']:,}", f"{c['long_enough']:,}", f"{c['unique']:,}", f"{c['train']:,}",
          f"{c['valid']:,}", f"{c['words']:.1f}"] for lang, c in pre_counts.items()])
    pre_packages: dict[str, set[str]] = defaultdict(set)
    for r in pre_rows:
        pre_packages[r["package"]].add(r["lang"])
    return f"""# Debian package descriptions: summarization, classification and pre-training text

Built from Debian's archive index files, suite **bookworm**, component **main**: the
`Translation-en`, `-de`, `-fr`, `-it`, `-da` files and the `binary-amd64/Packages` file.
Package descriptions (a one-line synopsis and a long description) are written by package
maintainers and upstream authors; the translations by Debian's volunteer translators (DDTP).

## Source

- Index files {fetched}, then parsed by `scripts/prepare-debian-data.py`.
- Release file seen: {rel}.
- Built on {built} in {seconds:.1f} s.
- Index files used (size and sha256 of the decompressed content):

{table(["index", "file", "bytes", "sha256"], indices)}

## Licence

Debian package descriptions are part of each package's control data. Debian distributes them,
and their translations, in its archive index files under the free licence of the package each
one describes (every package in `main` meets the Debian Free Software Guidelines). They are
redistributed here as data for research: {len(summ_rows):,} summarization pairs,
{len(cls_rows):,} classification rows and {len(pre_rows):,} pre-training descriptions, each naming
its package, so the licence of any row can be looked up in that package's `debian/copyright`.

## Rebuild

```
{rebuild}
```

The script fetches the index files with the `apt-get update` command above into a temporary
folder (it needs the network access to a Debian mirror that `apt-get` uses; run it as root, or
reuse fetched files with `--lists DIR`). The output is deterministic for a given set of index
files: rows are sorted by package name; gzip headers hold no time stamp. Needs only the Python
standard library (`.lz4` indices, apt's default, are read with the `lz4` module or tool).

## Files

{table(["file", "bytes", "sha256"], files)}

Each line is a JSON object. Every row carries `package` (binary package), `source` (its source
package) and `split`. The split is set by a SHA-1 hash of the source package name (buckets out
of 10,000: < {VALID_BUCKETS} valid, < {VALID_BUCKETS + TEST_BUCKETS} test, the rest train), so
binary packages built from one source always share a split, in both files.

### `summarization.jsonl.gz`: long description -> synopsis

Fields `package`, `source`, `split`, `document` (the English long description: lines joined,
whitespace collapsed, one paragraph per line, i.e. paragraphs separated by `\\n`), `summary`
(the English synopsis).

- {summ_counts['descriptions']:,} packages with an English description; {summ_counts['long_enough']:,}
  with a long description of at least {MIN_DOCUMENT_WORDS} words, {summ_counts['in_range']:,} of them
  with at most {MAX_DOCUMENT_WORDS} words (the longer ones are inventories: lists of CTAN
  packages, fonts, scripts); **{len(summ_rows):,} pairs** after dropping near-duplicates (same
  first {NEAR_DUPLICATE_PREFIX} characters of the document; the first package by name stays).
- Splits: train {splits_s['train']:,}, valid {splits_s['valid']:,}, test {splits_s['test']:,}.
- Mean words (whitespace-separated): document {summ_stats['document_words']:.1f}, summary
  {summ_stats['summary_words']:.2f}.
- Summary word types absent from the document (case-folded `\\w+` types, pooled over all pairs):
  {100 * summ_stats['novel_types']:.1f} % (mean per pair {100 * summ_stats['novel_types_per_pair']:.1f} %).
- Example (`{example['package']}`): "{example['document'][:160]}…" -> "{example['summary']}".

### `classification.jsonl.gz`: synopsis -> section

Fields `package`, `source`, `split`, `text` (the English synopsis), `label` (the package's
archive section, any `contrib/` or `non-free/` prefix removed), `translations` (`{{lang:
synopsis}}` for the languages among de, fr, it, da that translate this exact description,
matched by `Description-md5`).

- {cls_details['binary_packages']:,} binary packages in the amd64 Packages index,
  {cls_details['synopses']:,} with a synopsis and a section; synopses (compared case-folded) that
  occur under two or more sections are dropped ({cls_details['ambiguous']:,} such synopses), and
  a synopsis shared by several packages of one section is kept once (the first by package
  name): {cls_details['unique']:,} unique synopses over {len(cls_details['sections_all'])} sections.
- Sections left out because the synopsis wording gives the label away (libraries, language
  modules, documentation, fonts, debug symbols, translations, transitional, meta and task
  packages): {", ".join(cls_details['giveaway'])}.
- Sections left out for having fewer than {MIN_SECTION_SIZE} unique synopses: {too_small}.
- **{len(cls_rows):,} rows over {len(cls_details['kept'])} sections.** Splits: train
  {splits_c['train']:,}, valid {splits_c['valid']:,}, test {splits_c['test']:,}.

{table(["section", "rows"], [[s, f"{per_section[s]:,}"] for s in sorted(per_section, key=lambda s: (-per_section[s], s))])}

Translated synopses (rows with a translation, and how many of them are in valid and test). A
"translation" equal to the English synopsis (compared case-folded) is left out:
{", ".join(f"{lang} {cls_details['untranslated'][lang]}" for lang in FOREIGN)}.

{table(["language", "rows", "valid", "test"], [[lang, f"{per_lang[lang]:,}", f"{by_split_lang[lang]['valid']:,}", f"{by_split_lang[lang]['test']:,}"] for lang in sorted(FOREIGN, key=lambda l: -per_lang[l])])}

Unique synopses per section before the section filter: {sections_all}.

### `pretraining.jsonl.gz`: unlabelled long descriptions in five languages

Fields `package`, `source`, `split` (train or valid: **no test-split package is included**, so a
model pre-trained on this file has never read the packages whose synopses the classification
tests use), `lang` (en, de, fr, it or da), `text` (the long description in that language, as in
`summarization.jsonl.gz`: one paragraph per line). For masked-LM pre-training
(`recipes/multilingual/`).

For each language: one description per package (the one the Packages index names), long
descriptions of at least {PRETRAIN_MIN_WORDS} words, near-duplicates (same first
{NEAR_DUPLICATE_PREFIX} characters) dropped; then, per split, the first
{PRETRAIN_PER_LANGUAGE['train']:,} train and {PRETRAIN_PER_LANGUAGE['valid']:,} valid packages in
the order of a SHA-1 hash of the package name (one order for every language, so a package is
often picked in several: comparable, not aligned text). **{len(pre_rows):,} rows** describing
{len(pre_packages):,} packages, {sum(1 for v in pre_packages.values() if len(v) == len(LANGS)):,} of
them in all five languages.

{pre_table}
"""


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lists", type=Path,
                        help="an apt lists folder already fetched (skips apt-get update)")
    parser.add_argument("--keep-lists", type=Path,
                        help="fetch into this folder and keep it (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--component", default="main")
    parser.add_argument("--arch", default="amd64")
    args = parser.parse_args(argv)

    start = time.monotonic()
    built = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="debian-descriptions-") as tmp:
        apt_shown = None
        if args.lists is not None:
            lists = args.lists
        else:
            root = args.keep_lists if args.keep_lists is not None else Path(tmp)
            lists, apt_shown = fetch(root.resolve())

        index_files: dict[str, tuple[Path, bytes]] = {}
        paths = {lang: find_index(lists, args.suite, args.component, f"i18n_Translation-{lang}")
                 for lang in LANGS}
        paths["packages"] = find_index(lists, args.suite, args.component,
                                       f"binary-{args.arch}_Packages")
        release = release_info(find_release(lists, args.suite))
        for label, path in paths.items():
            index_files[label] = (path, read_bytes(path))

        english = read_translations(paths["en"], "en")
        packages = read_packages(paths["packages"])
        translations = {"en": english}
        foreign = {}
        for lang in FOREIGN:
            translations[lang] = read_translations(paths[lang], lang)
            by_md5: dict[str, str] = {}
            for r in translations[lang]:
                if r["synopsis"]:
                    by_md5.setdefault(r["md5"], r["synopsis"])
            foreign[lang] = by_md5
        print(f"read {len(english):,} English descriptions, {len(packages):,} binary packages, "
              + ", ".join(f"{lang} {len(foreign[lang]):,}" for lang in FOREIGN), file=sys.stderr)

        summ_rows, summ_counts = build_summarization(english, packages)
        cls_rows, cls_details = build_classification(english, packages, foreign)
        pre_rows, pre_counts = build_pretraining(translations, packages)

        args.out.mkdir(parents=True, exist_ok=True)
        write_jsonl_gz(args.out / "summarization.jsonl.gz", summ_rows)
        write_jsonl_gz(args.out / "classification.jsonl.gz", cls_rows)
        write_jsonl_gz(args.out / "pretraining.jsonl.gz", pre_rows)
        summ_stats = summarization_stats(summ_rows)

        try:
            shown_out = args.out.resolve().relative_to(REPO)
        except ValueError:
            shown_out = args.out
        rebuild = ".venv/bin/python scripts/prepare-debian-data.py"
        if shown_out != DEFAULT_OUT.relative_to(REPO):
            rebuild += f" --out {shown_out}"
        seconds = time.monotonic() - start
        text = provenance(out=args.out, apt_shown=apt_shown, lists=lists, release=release,
                          index_files=index_files, built=built, seconds=seconds,
                          summ_rows=summ_rows, summ_counts=summ_counts, summ_stats=summ_stats,
                          cls_rows=cls_rows, cls_details=cls_details, pre_rows=pre_rows,
                          pre_counts=pre_counts, rebuild=rebuild)
        (args.out / "PROVENANCE.md").write_text(text, encoding="utf-8")

    print(f"summarization: {len(summ_rows):,} pairs "
          f"(doc {summ_stats['document_words']:.1f} words, summary "
          f"{summ_stats['summary_words']:.2f} words, novel types "
          f"{100 * summ_stats['novel_types']:.1f} %)", file=sys.stderr)
    print(f"classification: {len(cls_rows):,} rows over {len(cls_details['kept'])} sections; "
          + ", ".join(f"{lang} {sum(1 for r in cls_rows if lang in r['translations']):,}"
                      for lang in FOREIGN), file=sys.stderr)
    print(f"pretraining: {len(pre_rows):,} descriptions; "
          + ", ".join(f"{lang} {c['train']:,}+{c['valid']:,}" for lang, c in pre_counts.items()), file=sys.stderr)
    print(f"wrote {args.out} in {time.monotonic() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
