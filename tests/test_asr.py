"""The ``asr`` task's parts that need no synthesised corpus: features, readers and their errors,
SpecAugment, MuST-C's layout. End-to-end runs are in tests/test_cascade.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch

from seqkd.errors import DataError
from seqkd.tasks.asr.adapter import normalize_transcript, spec_augment
from seqkd.tasks.asr.audio import fbank, load_features, read_wav
from seqkd.tasks.asr.config import SpecAugment
from seqkd.tasks.asr.corpus import parse_audio_ref, read_manifest, read_mustc


def tone(hz: float, seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * math.pi * hz * t)).astype(np.float32)


def test_features_have_100_frames_a_second_follow_the_pitch_and_are_normalised():
    low, high = (fbank(torch.from_numpy(tone(hz)), normalize=False) for hz in (300, 2000))
    assert low.shape == (98, 80) and high.shape == (98, 80)  # 25 ms windows every 10 ms
    assert high.mean(0).argmax() > low.mean(0).argmax() + 10  # a higher tone lands in a higher mel channel
    normalised = fbank(torch.from_numpy(tone(300)) + 0.01 * torch.randn(16000))
    assert normalised.mean(0).abs().max() < 1e-3 and torch.allclose(normalised.std(0, unbiased=False), torch.ones(80), atol=1e-3)


def test_bad_audio_files_are_refused_naming_the_file(tmp_path):
    soundfile.write(tmp_path / "ok.wav", tone(440), 16000, subtype="PCM_16")
    soundfile.write(tmp_path / "8k.wav", tone(440, rate=8000), 8000, subtype="PCM_16")
    soundfile.write(tmp_path / "stereo.wav", np.stack([tone(440), tone(440)], 1), 16000, subtype="PCM_16")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    assert read_wav(tmp_path / "ok.wav").shape == (16000,)
    assert read_wav(tmp_path / "ok.wav", 0.25, 0.75).shape == (8000,)
    for name, message in [("8k.wav", "sample rate 8000 Hz; seqkd reads 16000 Hz"), ("stereo.wav", "2 channels; seqkd reads mono"),
                          ("junk.wav", "cannot read audio"), ("missing.wav", "cannot read audio")]:
        with pytest.raises(DataError, match=f"{name}: {message}"):
            load_features(tmp_path / name)
    with pytest.raises(DataError, match="lies outside the file"):
        read_wav(tmp_path / "ok.wav", 2.0, 3.0)


def manifest(tmp_path, *rows: str) -> object:
    path = tmp_path / "manifest.tsv"
    path.write_text("id\tsplit\taudio\tsamples\tsha256\ttext\n" + "".join(r + "\n" for r in rows))
    return path


def test_manifest_lines_are_read_and_bad_ones_named_by_line(tmp_path):
    good = "u1\ttrain\twav/u1.wav\t32000\tabc\tHello world"
    splits = read_manifest(manifest(tmp_path, good, "u2\ttest\twav/u2.wav\t16000\tdef\tBye."), 16000, 20.0)
    assert [p.target for p in splits["train"]] == ["Hello world"] and splits["train"][0].source == str(tmp_path / "wav" / "u1.wav")
    for row, message in [
        ("u3\ttrain\twav/u3.wav\t16000\tabc\t ", r"manifest.tsv:3: empty transcript for wav/u3.wav"),
        ("u3\tdev\twav/u3.wav\t16000\tabc\thi", r"manifest.tsv:3: split 'dev'; valid choices: train, valid, test"),
        ("u3\ttrain\twav/u3.wav\tlots\tabc\thi", r"manifest.tsv:3: samples 'lots' is not a whole number"),
        ("u3\ttrain\twav/u3.wav\t16000\thi", r"manifest.tsv:3: 5 fields, the header has 6"),
        ("u3\ttrain\twav/u3.wav\t480000\tabc\thi", r"manifest.tsv:3: .*u3.wav: 30.0 s of audio; the task's max_seconds is 20"),
    ]:
        with pytest.raises(DataError, match=message):
            read_manifest(manifest(tmp_path, good, row), 16000, 20.0)
    (tmp_path / "manifest.tsv").write_text("id\taudio\ttext\n")
    with pytest.raises(DataError, match=r"manifest.tsv:1: the header lacks column\(s\) split, samples, sha256"):
        read_manifest(tmp_path / "manifest.tsv", 16000, 20.0)


def test_mustc_segments_are_cut_from_their_talks(tmp_path):
    base = tmp_path / "en-es" / "data"
    talk = np.concatenate([tone(300, 1.0), tone(2000, 1.0)])
    for name in ("train", "dev", "tst-COMMON"):
        (base / name / "wav").mkdir(parents=True)
        (base / name / "txt").mkdir()
        soundfile.write(base / name / "wav" / "ted_1.wav", talk, 16000, subtype="PCM_16")
        (base / name / "txt" / f"{name}.yaml").write_text(
            "- {duration: 1.0, offset: 0.0, speaker_id: spk.1, wav: ted_1.wav}\n- {duration: 1.0, offset: 1.0, speaker_id: spk.1, wav: ted_1.wav}\n")
        (base / name / "txt" / f"{name}.en").write_text("Low tone.\nHigh tone.\n")
    splits = read_mustc(tmp_path, "es", max_seconds=20.0)
    assert [p.target for p in splits["test"]] == ["Low tone.", "High tone."]
    low, high = (load_features(*parse_audio_ref(p.source), normalize=False) for p in splits["valid"])
    assert low.shape[0] == high.shape[0] == 98 and high.mean(0).argmax() > low.mean(0).argmax() + 10
    (base / "dev" / "txt" / "dev.en").write_text("Only one line.\n")
    with pytest.raises(DataError, match=r"dev.yaml: 2 segments, but .*dev.en has 1 lines"):
        read_mustc(tmp_path, "es", max_seconds=20.0)
    with pytest.raises(DataError, match=r"train.yaml: segment 1 \(.*ted_1.wav\): 1.0 s of audio; the task's max_seconds is 0.5"):
        (base / "dev" / "txt" / "dev.en").write_text("Low tone.\nHigh tone.\n")
        read_mustc(tmp_path, "es", max_seconds=0.5)


def test_spec_augment_masks_inside_each_utterance_and_is_reproducible():
    features, lens = torch.randn(3, 200, 80) + 5, [200, 120, 60]
    settings = SpecAugment(freq_masks=2, freq_width=20, time_masks=2, time_width=0.2)
    a, b = (spec_augment(features, lens, settings, torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, features)
    assert torch.equal(a[1, 120:], features[1, 120:]) and torch.equal(a[2, 60:], features[2, 60:])  # padding untouched
    assert not torch.equal(a, spec_augment(features, lens, settings, torch.Generator().manual_seed(8)))


def test_transcripts_are_scored_without_case_or_punctuation():
    assert normalize_transcript("Tools for the GNU/Linux  system, (v2)!") == "tools for the gnu linux system v2"
    assert normalize_transcript("don't re-run") == "don't re-run"
