"""The synthesised speech corpus (seqkd.tasks.asr.synthesize) and the real recorded clips."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from seqkd.errors import DataError
from seqkd.tasks.asr.audio import FRAMES_PER_SECOND, MEL_BINS, SAMPLE_RATE, load_features
from seqkd.tasks.asr.synthesize import (
    MANIFEST_COLUMNS, SPLITS, Espeak, build_speech_corpus, make_config, render, repository_path,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "speech-samples"
TINY = {"max_train": 12, "max_valid": 4, "max_test": 4}


def tiny(**changes):
    return make_config(**{**TINY, "workers": 2, **changes})


def corpus_of(config) -> Path:
    return repository_path(config.corpus)


def read_manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.tsv").open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        return list(reader)


def snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny corpus built twice into two folders, with 2 workers and with 1."""
    first = tmp_path_factory.mktemp("speech") / "a"
    second = tmp_path_factory.mktemp("speech") / "b"
    build_speech_corpus(tiny(), corpus_of(tiny()), first, log=lambda _: None)
    build_speech_corpus(tiny(workers=1), corpus_of(tiny()), second, log=lambda _: None)
    return first, second


def test_builds_are_byte_identical_whatever_the_workers(built):
    first, second = built
    assert (first / "manifest.tsv").read_bytes() == (second / "manifest.tsv").read_bytes()
    for row in read_manifest(first):
        assert hashlib.sha256((first / row["audio"]).read_bytes()).digest() == hashlib.sha256((second / row["audio"]).read_bytes()).digest()
    for split in SPLITS:
        assert (first / f"{split}.tsv").read_bytes() == (second / f"{split}.tsv").read_bytes()


def test_manifest_wavs_and_tsv_files_agree(built):
    out, _ = built
    rows = read_manifest(out)
    assert [sum(r["split"] == s for r in rows) for s in SPLITS] == [12, 4, 4]
    assert [r["id"] for r in rows] == [f"{s}-{i:05d}" for s in SPLITS for i in range(TINY[f"max_{s}"])]
    config = tiny()
    for row in rows:
        assert row["audio"] == f"wav/{row['split']}/{row['id']}.wav"
        path = out / row["audio"]
        info = soundfile.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (SAMPLE_RATE, 1, "PCM_16", "WAV")
        assert info.frames == int(row["samples"]) > SAMPLE_RATE // 2
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
        assert row["voice"] in config.voices
        assert config.rate[0] <= int(row["rate"]) <= config.rate[1]
        assert config.pitch[0] <= int(row["pitch"]) <= config.pitch[1]
        assert config.snr_db[0] <= float(row["snr_db"]) <= config.snr_db[1]
        assert row["text"] and row["translation"] and row["text"] == " ".join(row["text"].split())
    for split in SPLITS:
        lines = (out / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        assert lines == [f"{r['text']}\t{r['translation']}" for r in rows if r["split"] == split]
    assert sorted(p.relative_to(out).as_posix() for p in (out / "wav").rglob("*") if p.is_file()) == sorted(r["audio"] for r in rows)
    record = json.loads((out / "build.json").read_text())
    assert record["settings"]["source_sha256"] == hashlib.sha256(corpus_of(config).read_bytes()).hexdigest()
    assert record["counts"] == {"train": 12, "valid": 4, "test": 4}
    for name, digest in record["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_first_rows_of_each_split_in_file_order(built):
    out, _ = built
    rows = read_manifest(out)
    expected: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    with gzip.open(corpus_of(tiny()), "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            text, translation = row["text"].strip(), (row.get("translations") or {}).get("it", "").strip()
            if text and translation and len(expected[row["split"]]) < TINY[f"max_{row['split']}"]:
                expected[row["split"]].append((" ".join(text.split()), " ".join(translation.split())))
    assert [(r["text"], r["translation"]) for r in rows] == [pair for s in SPLITS for pair in expected[s]]


def test_same_settings_do_nothing_and_other_settings_are_refused(built):
    out, _ = built
    before = snapshot(out)
    messages = []
    assert build_speech_corpus(tiny(workers=1), corpus_of(tiny()), out, log=messages.append) == out / "manifest.tsv"
    assert snapshot(out) == before  # not a file rewritten: same bytes and mtimes
    assert messages and "nothing to do" in messages[-1]
    with pytest.raises(DataError, match=f"{out}.*other settings.*seed: 0 -> 1"):
        build_speech_corpus(tiny(seed=1), corpus_of(tiny()), out, log=lambda _: None)
    assert snapshot(out) == before


def test_force_rebuilds_and_removes_stale_audio(tmp_path):
    out = tmp_path / "c"
    build_speech_corpus(tiny(max_train=3, max_valid=1, max_test=1), corpus_of(tiny()), out, log=lambda _: None)
    build_speech_corpus(tiny(max_train=2, max_valid=1, max_test=1, seed=5), corpus_of(tiny()), out, force=True, log=lambda _: None)
    rows = read_manifest(out)
    assert len(rows) == 4
    assert sorted(p.name for p in (out / "wav").rglob("*.wav")) == sorted(Path(r["audio"]).name for r in rows)
    assert json.loads((out / "build.json").read_text())["settings"]["seed"] == 5


def test_bad_settings_and_foreign_folders_are_refused(tmp_path):
    with pytest.raises(DataError, match="no English voice 'en-xx'"):
        make_config(voices=["en-xx"])
    with pytest.raises(DataError, match="no voice variant 'nope'"):
        make_config(voices=["en-us+nope"])
    with pytest.raises(DataError, match="rate"):
        make_config(rate=(200, 100))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a speech corpus folder"):
        build_speech_corpus(tiny(), corpus_of(tiny()), tmp_path, log=lambda _: None)


def test_voices_and_rates_change_the_audio(built):
    out, _ = built
    rows = read_manifest(out)
    assert len({r["voice"] for r in rows}) >= 5 and len({r["rate"] for r in rows}) >= 5
    espeak = Espeak()
    text = "command line tool to convert documents between formats"
    base = {"seed": 0, "snr_db": (20.0, 20.0), "noise": ["white"], "gain_db": (0.0, 0.0), "pitch": (50, 50)}
    lengths = {}
    for voice in ("en-us", "en-gb-scotland+m1", "en+f4"):
        for rate in (100, 250):
            samples, drawn = render({**base, "voices": [voice], "rate": (rate, rate)}, espeak, "train-00000", text)
            assert (drawn["voice"], drawn["rate"]) == (voice, rate)
            lengths[voice, rate] = len(samples)
    for voice in ("en-us", "en-gb-scotland+m1", "en+f4"):
        assert lengths[voice, 100] > 1.8 * lengths[voice, 250]  # slower speech is longer
    assert len({lengths[v, 100] for v in ("en-us", "en-gb-scotland+m1", "en+f4")}) == 3
    again, _ = render({**base, "voices": ["en-us"], "rate": (100, 100)}, espeak, "train-00000", text)
    assert len(again) == lengths["en-us", 100]  # and it is reproducible in one process


def test_real_recorded_clips_give_normalised_features():
    with (SAMPLES / "transcripts.tsv").open(encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    assert 3 <= len(rows) <= 5
    assert sorted(name for name, _ in rows) == sorted(p.name for p in SAMPLES.glob("*.wav"))
    assert sum(p.stat().st_size for p in SAMPLES.iterdir()) < 1_500_000
    for name, transcript in rows:
        assert len(transcript.split()) >= 5
        info = soundfile.info(str(SAMPLES / name))
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        features = load_features(SAMPLES / name)
        assert features.shape[1] == MEL_BINS
        assert abs(features.shape[0] - FRAMES_PER_SECOND * info.duration) <= 3
        assert np.allclose(features.mean(0).numpy(), 0.0, atol=1e-3)
        assert np.allclose(features.std(0, unbiased=False).numpy(), 1.0, atol=1e-3)
