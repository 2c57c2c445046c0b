"""Reading utterances: seqkd speech manifests and the MuST-C release, every error named by
``file:line``.

An utterance's audio is a string, ``path`` or ``path#start,end`` (seconds, for a segment of a
longer recording as in MuST-C), so it travels as the ``source`` of a :class:`Pair` like any other
encoder-decoder task's source, and a ``transcribe`` command reads the same form.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from seqkd.errors import DataError
from seqkd.fileio import read_lines
from seqkd.tasks.seq2seq.corpus import Pair

MANIFEST_COLUMNS = ("id", "split", "audio", "samples", "sha256", "text")
MUSTC_SPLITS = {"train": "train", "valid": "dev", "test": "tst-COMMON"}
_SEGMENT = re.compile(r"^(?P<path>.+)#(?P<start>\d+(?:\.\d*)?),(?P<end>\d+(?:\.\d*)?)$")


def audio_ref(path: Path, start: float | None = None, end: float | None = None) -> str:
    return str(path) if start is None else f"{path}#{start:g},{end:g}"


def parse_audio_ref(ref: str) -> tuple[Path, float, float | None]:
    """The wav path and the segment (start, end in seconds; end None: to the end of the file)."""
    match = _SEGMENT.match(ref)
    if match is None:
        return Path(ref), 0.0, None
    return Path(match["path"]), float(match["start"]), float(match["end"])


def read_manifest(path: Path, sample_rate: int, max_seconds: float) -> dict[str, list[Pair]]:
    """The utterances of a seqkd speech manifest by split; audio paths are relative to its folder."""
    splits: dict[str, list[Pair]] = {"train": [], "valid": [], "test": []}
    header: dict[str, int] | None = None
    for lineno, line in read_lines(path):
        cells = line.rstrip("\n").split("\t")
        if header is None:
            header = {name: i for i, name in enumerate(cells)}
            missing = [c for c in MANIFEST_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path}:{lineno}: the header lacks column(s) {', '.join(missing)} (a manifest has {', '.join(MANIFEST_COLUMNS)}, ...)")
            continue
        if len(cells) != len(header):
            raise DataError(f"{path}:{lineno}: {len(cells)} fields, the header has {len(header)}")
        row = {name: cells[i].strip() for name, i in header.items()}
        where = f"{path}:{lineno}"
        if row["split"] not in splits:
            raise DataError(f"{where}: split {row['split']!r}; valid choices: train, valid, test")
        if not row["text"]:
            raise DataError(f"{where}: empty transcript for {row['audio']}")
        try:
            samples = int(row["samples"])
        except ValueError:
            raise DataError(f"{where}: samples {row['samples']!r} is not a whole number") from None
        audio = path.parent / row["audio"]
        _check_length(samples / sample_rate, max_seconds, f"{where}: {audio}")
        splits[row["split"]].append(Pair(str(audio), row["text"]))
    if header is None:
        raise DataError(f"{path}: empty manifest")
    return splits


def mustc_files(root: Path, language: str) -> dict[str, tuple[Path, Path]]:
    """Each split's segment list and transcript file in a MuST-C release."""
    base = root / f"en-{language}" / "data"
    return {split: (base / name / "txt" / f"{name}.yaml", base / name / "txt" / f"{name}.en") for split, name in MUSTC_SPLITS.items()}


def read_mustc(root: Path, language: str, max_seconds: float) -> dict[str, list[Pair]]:
    """MuST-C's utterances: each ``<split>.yaml`` entry (``wav``, ``offset``, ``duration``) is a
    segment of a talk's wav file, line-aligned with ``<split>.en``."""
    splits = {}
    for split, (segments_path, text_path) in mustc_files(root, language).items():
        if not segments_path.exists():
            raise DataError(f"{segments_path}: no such file (MuST-C's layout is en-{language}/data/<split>/txt/<split>.yaml)")
        try:
            segments = yaml.load(segments_path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as exc:
            raise DataError(f"{segments_path}: not YAML ({str(exc).splitlines()[0]})") from None
        texts = [line for _, line in read_lines(text_path)]
        if not isinstance(segments, list) or len(segments) != len(texts):
            count = len(segments) if isinstance(segments, list) else "no"
            raise DataError(f"{segments_path}: {count} segments, but {text_path} has {len(texts)} lines")
        wav_dir = segments_path.parent.parent / "wav"
        pairs = []
        for number, (segment, text) in enumerate(zip(segments, texts), start=1):
            where = f"{segments_path}: segment {number}"
            if not isinstance(segment, dict) or not {"wav", "offset", "duration"} <= set(segment):
                raise DataError(f"{where}: needs wav, offset and duration")
            if not text.strip():
                raise DataError(f"{text_path}:{number}: empty transcript")
            start, duration = float(segment["offset"]), float(segment["duration"])
            wav = wav_dir / str(segment["wav"])
            _check_length(duration, max_seconds, f"{where} ({wav})")
            pairs.append(Pair(audio_ref(wav, start, start + duration), text.strip()))
        splits[split] = pairs
    return splits


def _check_length(seconds: float, max_seconds: float, where: str) -> None:
    if seconds > max_seconds:
        raise DataError(f"{where}: {seconds:.1f} s of audio; the task's max_seconds is {max_seconds:g} (raise it, or leave the utterance out)")

