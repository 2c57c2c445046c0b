"""The shipped Debian package-description data sets (scripts/prepare-debian-data.py)."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "debian-descriptions"
SPLITS = {"train", "valid", "test"}
LANGS = {"de", "fr", "it", "da"}
GIVEAWAY = {"libs", "libdevel", "oldlibs", "doc", "debug", "python", "perl", "ruby", "java",
            "javascript", "golang", "rust", "haskell", "fonts", "localization", "metapackages"}


def rows(name: str) -> list[dict]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def summarization() -> list[dict]:
    return rows("summarization.jsonl.gz")


@pytest.fixture(scope="module")
def classification() -> list[dict]:
    return rows("classification.jsonl.gz")


@pytest.fixture(scope="module")
def provenance() -> str:
    return (DATA / "PROVENANCE.md").read_text(encoding="utf-8")


def check_splits(items: list[dict]) -> None:
    by_split: dict[str, set[str]] = {s: set() for s in SPLITS}
    for r in items:
        assert r["split"] in SPLITS
        by_split[r["split"]].add(r["package"])
    assert not by_split["train"] & by_split["valid"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["valid"] & by_split["test"]
    sources: dict[str, set[str]] = {}
    for r in items:  # binaries of one source package share a split
        sources.setdefault(r["source"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sources.values())
    sizes = Counter(r["split"] for r in items)
    assert 600 <= sizes["valid"] <= 1500 and 600 <= sizes["test"] <= 1500


def test_summarization_pairs(summarization):
    assert 18_000 <= len(summarization) <= 25_000
    packages = [r["package"] for r in summarization]
    assert packages == sorted(packages) and len(set(packages)) == len(packages)
    for r in summarization:
        assert set(r) == {"package", "source", "split", "document", "summary"}
        assert 40 <= len(r["document"].split()) <= 500
        assert r["summary"] and "\n" not in r["summary"]
        assert r["document"] == r["document"].strip() and "  " not in r["document"]
    assert len({r["document"][:150] for r in summarization}) == len(summarization)
    doc_words = sum(len(r["document"].split()) for r in summarization) / len(summarization)
    summary_words = sum(len(r["summary"].split()) for r in summarization) / len(summarization)
    assert 60 <= doc_words <= 100 and 5 <= summary_words <= 9
    check_splits(summarization)


def test_classification_rows(classification, provenance):
    assert 15_000 <= len(classification) <= 25_000
    for r in classification:
        assert set(r) == {"package", "source", "split", "text", "label", "translations"}
        assert r["text"] and "/" not in r["label"]
        assert set(r["translations"]) <= LANGS
    texts = [r["text"].casefold() for r in classification]
    assert len(set(texts)) == len(texts)
    labels = Counter(r["label"] for r in classification)
    assert 20 <= len(labels) <= 35 and min(labels.values()) >= 100
    assert not set(labels) & GIVEAWAY
    recorded = dict(re.findall(r"^\| ([a-z0-9-]+) \| ([\d,]+) \|$", provenance, re.M))
    assert set(recorded) == set(labels)
    assert all(int(recorded[s].replace(",", "")) == n for s, n in labels.items())
    translated = Counter(lang for r in classification for lang in r["translations"])
    assert sum(1 for n in translated.values() if n >= 1000) >= 4
    check_splits(classification)


def test_pretraining_text_has_five_languages_and_no_test_package(classification):
    pretraining = rows("pretraining.jsonl.gz")
    assert 15_000 <= len(pretraining) <= 30_000
    langs = Counter(r["lang"] for r in pretraining)
    assert set(langs) == LANGS | {"en"} and min(langs.values()) >= 2000
    for r in pretraining:
        assert set(r) == {"package", "source", "split", "lang", "text"}
        assert r["split"] in ("train", "valid") and len(r["text"].split()) >= 20
    keys = [(r["lang"], r["package"]) for r in pretraining]
    assert len(set(keys)) == len(keys)
    # the packages whose synopses the zero-shot tests classify were never pre-trained on
    test_packages = {r["package"] for r in classification if r["split"] == "test"}
    assert not test_packages & {r["package"] for r in pretraining}
    splits: dict[str, set[str]] = {}
    for r in pretraining:
        splits.setdefault(r["source"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())


def test_provenance_matches_the_files(provenance):
    for name in ("summarization.jsonl.gz", "classification.jsonl.gz", "pretraining.jsonl.gz"):
        digest = hashlib.sha256((DATA / name).read_bytes()).hexdigest()
        assert f"| `{name}` | {(DATA / name).stat().st_size:,} | `{digest}` |" in provenance
    assert "apt-get update" in provenance and "scripts/prepare-debian-data.py" in provenance
