"""A small English-speech -> translation corpus, spoken by an offline synthesiser.

The text is real and human-translated: the English one-line package synopses of
``data/debian-descriptions/classification.jsonl.gz`` (see its PROVENANCE.md) are the transcripts,
and the Debian translators' synopsis in the chosen language (``translations[language]``) is the
translation; the file's own train/valid/test split is kept. Each transcript is spoken by eSpeak NG
1.52 (the ``espeakng-loader`` wheel bundles the library and its voice data, so nothing is fetched),
with a voice, speaking rate and pitch drawn per utterance, resampled from 22,050 to 16,000 Hz, padded
with 0.1-0.4 s of silence at each end and mixed with white or pink noise at a drawn signal-to-noise
ratio (speech power over the synthesised part) and a drawn gain. A model trained on it therefore
makes real recognition errors, which is what an ASR -> MT cascade needs.

Everything an utterance gets is drawn from a generator seeded by ``(seed, utterance id)`` alone, and
eSpeak NG's own random generator is reseeded from it; eSpeak NG also keeps synthesis state from one
message to the next (pitch phase, sample counters), so the library is loaded afresh for every
utterance (``dlopen`` .. ``dlclose``, about 3 ms). The output is byte-identical whatever the number
of workers and whatever order they run in; a worker refuses to run in a process where the library
stays loaded after ``dlclose`` (another user of it in the process would make the audio depend on
what was synthesised before).

Output folder (the contract with the asr task)::

    <out>/wav/<split>/<id>.wav   mono 16 kHz 16-bit PCM; id = "<split>-<5-digit index within split>"
    <out>/manifest.tsv           header, then id, split, audio, samples, sha256, voice, rate, pitch,
                                 snr_db, text, translation (tab-separated; audio relative to <out>)
    <out>/{train,valid,test}.tsv "text<TAB>translation", in manifest order
    <out>/build.json             settings (with the source file's sha256 and the synthesiser's
                                 version), counts, and the sha256 of manifest.tsv and the tsv files

Measured on a 2-core machine busy with other jobs (load average 4.7): the defaults (8,000 train, 500
valid, 500 test utterances, Italian translations, 2 workers) built in 167 s (2 min 53 s for the whole
``seqkd speech-data`` command, imports included) and take 992 MB on disk: 8.6 h of audio, 1.1 to
11.5 s per utterance (mean 3.4 s), no sample clipped.
"""

from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import io
import json
import math
import multiprocessing
import re
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy.signal import resample_poly

import seqkd
from seqkd.errors import DataError
from seqkd.fileio import FolderLock, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json, read_json_lines
from seqkd.hashing import file_sha256
from seqkd.tasks.asr.audio import SAMPLE_RATE

SPLITS = ("train", "valid", "test")
MANIFEST_COLUMNS = ("id", "split", "audio", "samples", "sha256", "voice", "rate", "pitch", "snr_db", "text", "translation")
TEXT_FILES = ("manifest.tsv", *(f"{split}.tsv" for split in SPLITS))  # build.json records their sha256
FORMAT = 1  # bumped when the same settings would give different files

ESPEAK_RATE = 22_050  # what eSpeak NG synthesises at
_UP, _DOWN = 320, 441  # 16,000 / 22,050
_PAD_SECONDS = (0.1, 0.4)  # silence (then noise) before and after the speech

# speak_lib.h (eSpeak NG 1.52, ESPEAK_API_REVISION 12)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_EE_OK = 0
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

LANGUAGE_NAMES = {"de": "German", "fr": "French", "it": "Italian", "da": "Danish"}

DEFAULT_VOICES = [
    "en-us", "en-us+f2", "en-us+m3", "en", "en+f4", "en+m7", "en-gb-scotland+m1", "en-gb-x-rp+f1",
    "en-029+m2", "en-us-nyc+f5", "en-gb-x-gbclan+m4", "en-gb-x-gbcwmd+f3",
]


def _espeak_paths() -> tuple[str, Path]:
    import espeakng_loader

    return espeakng_loader.get_library_path(), Path(espeakng_loader.get_data_path())


def available_voices() -> tuple[set[str], set[str]]:
    """The English voices (lower-cased file names under ``lang/``, e.g. ``en-us``) and the voice
    variants (``voices/!v``, e.g. ``f3``) of the bundled eSpeak NG data."""
    _, data = _espeak_paths()
    voices = {p.name.lower() for p in (data / "lang").rglob("*") if p.is_file() and p.name.lower().split("-")[0] == "en"}
    variants = {p.name for p in (data / "voices" / "!v").iterdir() if p.is_file()}
    return voices, variants


class SynthesisConfig(BaseModel):
    """How the speech corpus is built; every field but ``corpus`` and ``workers`` is recorded in
    build.json and changes the output."""

    model_config = ConfigDict(extra="forbid")

    corpus: str = Field(
        "data/debian-descriptions/classification.jsonl.gz",
        description="The source JSON lines (package, split, text, translations); a relative path is resolved "
                    "by the caller (the CLI: against the repository).",
    )
    language: Literal["de", "fr", "it", "da"] = Field("it", description="The language of the translations (a key of each row's `translations`).")
    max_train: int | None = Field(8000, ge=0, description="Use the first N usable train rows in file order (None: all).")
    max_valid: int | None = Field(500, ge=0, description="Use the first N usable valid rows in file order (None: all).")
    max_test: int | None = Field(500, ge=0, description="Use the first N usable test rows in file order (None: all).")
    voices: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VOICES), min_length=1,
        description="eSpeak NG English voices, optionally with a variant (`en-us+f3`); one is drawn per utterance.",
    )
    rate: tuple[int, int] = Field(
        (140, 200), description="Speaking rate in words per minute, drawn uniformly from this inclusive range (eSpeak NG allows 80-450).")
    pitch: tuple[int, int] = Field(
        (25, 75), description="Base pitch (eSpeak NG's 0-100 scale, 50 normal), drawn uniformly from this inclusive range.")
    snr_db: tuple[float, float] = Field(
        (10.0, 30.0), description="Signal-to-noise ratio in dB of the added noise, drawn uniformly (rounded to 0.1 dB).")
    noise: list[Literal["white", "pink"]] = Field(
        default_factory=lambda: ["white", "pink"], min_length=1, description="Kinds of noise; one is drawn per utterance.")
    gain_db: tuple[float, float] = Field(
        (-6.0, 0.0), description="Gain in dB applied to the noisy utterance, drawn uniformly; samples beyond int16 are clipped.")
    seed: int = Field(0, description="Seeds every random choice, together with the utterance id.")
    workers: int = Field(2, ge=1, description="Worker processes; the output does not depend on it.")

    @field_validator("voices")
    @classmethod
    def _known_voices(cls, voices: list[str]) -> list[str]:
        known, variants = available_voices()
        for voice in voices:
            base, _, variant = voice.partition("+")
            if base.lower() not in known:
                raise ValueError(f"eSpeak NG has no English voice {base!r} (it has: {', '.join(sorted(known))})")
            if "+" in voice and variant not in variants:
                raise ValueError(f"eSpeak NG has no voice variant {variant!r} in {voice!r} (e.g. m1-m8, f1-f5)")
        if len(set(voices)) != len(voices):
            raise ValueError("a voice is listed twice")
        return voices

    @model_validator(mode="after")
    def _ranges(self) -> "SynthesisConfig":
        for name, low, high in (("rate", 80, 450), ("pitch", 0, 100), ("snr_db", -20, 100), ("gain_db", -40, 20)):
            first, last = getattr(self, name)
            if not (math.isfinite(first) and math.isfinite(last) and low <= first <= last <= high):
                raise ValueError(f"{name}: ({first}, {last}) must be a range within {low}..{high}, smallest first")
        return self


def make_config(**options: Any) -> SynthesisConfig:
    """A ``SynthesisConfig``; invalid options become one ``DataError`` naming each bad option."""
    try:
        return SynthesisConfig(**options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise DataError(f"invalid speech corpus settings: {problems}") from None


def repository_path(path: str | Path) -> Path:
    """``path`` if absolute, else resolved against the repository holding this seqkd (where data/ is)."""
    path = Path(path)
    return path if path.is_absolute() else Path(seqkd.__file__).resolve().parent.parent / path


# -- eSpeak NG ----------------------------------------------------------------------------------


def _library_mapped(path: str) -> bool:
    target = str(Path(path).resolve())
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        return any(line.rstrip("\n").endswith(target) for line in maps)


def espeak_version() -> str:
    """The bundled eSpeak NG's version (the library is loaded and unloaded again)."""
    library, _ = _espeak_paths()
    lib = ctypes.CDLL(library)
    try:
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        return lib.espeak_Info(None).decode()
    finally:
        _ctypes.dlclose(lib._handle)


class Espeak:
    """eSpeak NG through ctypes; every ``speak`` runs in a freshly loaded copy of the library, so its
    output depends on its arguments only."""

    def __init__(self) -> None:
        library, data = _espeak_paths()
        self.library = library
        self.data = str(data).encode()
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept alive while the library may call it

    def _collect(self, wav, count, events) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # continue

    def check_unloads(self) -> None:
        """Refuse to work where ``dlclose`` cannot unload the library (someone else holds it)."""
        self.speak("test", "en", 175, 50, 1)
        if _library_mapped(self.library):
            raise DataError(
                f"{self.library} stays loaded in this process after dlclose (another module uses eSpeak NG), "
                "so its output would depend on what it synthesised before; build the speech corpus in a process of its own"
            )

    def speak(self, text: str, voice: str, rate: int, pitch: int, seed: int) -> np.ndarray:
        """int16 samples at 22,050 Hz."""
        lib = ctypes.CDLL(self.library)
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                         ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            rate_hz = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data, 0)
            if rate_hz != ESPEAK_RATE:
                raise DataError(f"eSpeak NG ({self.library}) did not start: espeak_Initialize returned {rate_hz}")
            try:
                lib.espeak_SetSynthCallback(self._callback)
                lib.espeak_ng_SetRandSeed(seed)
                if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                    raise DataError(f"eSpeak NG has no voice {voice!r}")
                lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
                lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
                self._chunks = []
                data = text.encode("utf-8")
                status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
                if status != _EE_OK or lib.espeak_Synchronize() != _EE_OK:
                    raise DataError(f"eSpeak NG failed (status {status}) on {text!r}")
            finally:
                lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)


# -- one utterance ------------------------------------------------------------------------------


def utterance_rng(seed: int, uid: str) -> np.random.Generator:
    """The generator of every random choice for utterance ``uid``."""
    digest = hashlib.sha256(f"seqkd-speech\0{seed}\0{uid}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _noise(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance white or pink (1/f power) noise."""
    white = rng.standard_normal(n)
    if kind == "white" or n < 4:
        return white
    spectrum = np.fft.rfft(white)
    bins = np.arange(len(spectrum), dtype=np.float64)
    bins[0] = 1.0
    pink = np.fft.irfft(spectrum / np.sqrt(bins), n)
    return pink / pink.std()


def wav_bytes(samples: np.ndarray) -> bytes:
    """A mono 16 kHz 16-bit PCM wav file holding ``samples`` (int16)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


_worker: dict[str, Any] = {}


def _init_worker(params: dict[str, Any]) -> None:
    _worker.clear()
    _worker.update(params)
    try:
        espeak = Espeak()
        espeak.check_unloads()
        _worker["espeak"] = espeak
    except Exception as exc:  # raised by the first task: a Pool restarts workers whose initializer raises, forever
        _worker["error"] = exc


def render(params: dict[str, Any], espeak: Espeak, uid: str, text: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The int16 16 kHz samples of one utterance and what was drawn for it."""
    rng = utterance_rng(params["seed"], uid)
    voice = params["voices"][int(rng.integers(len(params["voices"])))]
    rate = int(rng.integers(params["rate"][0], params["rate"][1] + 1))
    pitch = int(rng.integers(params["pitch"][0], params["pitch"][1] + 1))
    snr_db = round(float(rng.uniform(*params["snr_db"])), 1)
    kind = params["noise"][int(rng.integers(len(params["noise"])))]
    gain_db = float(rng.uniform(*params["gain_db"]))
    lead, trail = (int(s * SAMPLE_RATE) for s in rng.uniform(*_PAD_SECONDS, size=2))
    espeak_seed = int(rng.integers(1, 2**31 - 1))

    speech = espeak.speak(text, voice, rate, pitch, espeak_seed)
    if len(speech) < ESPEAK_RATE // 10:
        raise DataError(f"{uid}: eSpeak NG gave {len(speech)} samples for {text!r}; an utterance needs at least 0.1 s")
    speech = resample_poly(speech.astype(np.float64), _UP, _DOWN)
    power = float(np.mean(speech**2))
    signal = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    noise = _noise(kind, rng, len(signal)) * math.sqrt(power / 10 ** (snr_db / 10))
    mixed = (signal + noise) * 10 ** (gain_db / 20)
    samples = np.clip(np.rint(mixed), -32768, 32767).astype(np.int16)
    return samples, {"voice": voice, "rate": rate, "pitch": pitch, "snr_db": snr_db}


def _synthesize(job: tuple[str, str, str]) -> tuple[str, int, str, dict[str, Any]]:
    uid, split, text = job
    if "error" in _worker:
        raise _worker["error"]
    samples, drawn = render(_worker, _worker["espeak"], uid, text)
    data = wav_bytes(samples)
    atomic_write_bytes(Path(_worker["out"]) / "wav" / split / f"{uid}.wav", data)
    return uid, len(samples), hashlib.sha256(data).hexdigest(), drawn


# -- the corpus ---------------------------------------------------------------------------------


def _one_line(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: expected text, found {type(value).__name__}")
    return " ".join(value.split())  # tabs, newlines and runs of spaces become one space


def read_pairs(config: SynthesisConfig, corpus: Path) -> tuple[dict[str, list[tuple[str, str]]], int]:
    """The (English text, translation) pairs of each split, the first ``max_<split>`` usable rows in
    file order, and the number of rows in the file without a text or without a translation."""
    limits = {"train": config.max_train, "valid": config.max_valid, "test": config.max_test}
    pairs: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    skipped = 0
    for lineno, row in read_json_lines(corpus):
        where = f"{corpus}:{lineno}"
        split = row.get("split")
        if split not in pairs:
            raise DataError(f"{where}: split {split!r}; expected one of {', '.join(SPLITS)}")
        translations = row.get("translations") or {}
        if not isinstance(translations, dict):
            raise DataError(f"{where}: translations is {type(translations).__name__}, not an object")
        text = _one_line(row.get("text"), f"{where}: text")
        translation = _one_line(translations.get(config.language), f"{where}: translations.{config.language}")
        if not text or not translation:
            skipped += 1
            continue
        limit = limits[split]
        if limit is None or len(pairs[split]) < limit:
            pairs[split].append((text, translation))
    return pairs, skipped


def build_settings(config: SynthesisConfig, corpus: Path) -> dict[str, Any]:
    """Everything the output depends on, as build.json records it."""
    if not corpus.is_file():
        raise DataError(f"{corpus}: no such file (the source of the speech corpus)")
    settings = {
        "format": FORMAT,
        **config.model_dump(mode="json", exclude={"corpus", "workers"}),
        "source_sha256": file_sha256(corpus),
        "sample_rate": SAMPLE_RATE,
        "espeak_ng": espeak_version(),
        "espeakng_loader": metadata.version("espeakng-loader"),
    }
    return json.loads(json.dumps(settings))  # tuples become lists, as read back from build.json


_OWN_NAMES = {"wav", "manifest.tsv", *(f"{split}.tsv" for split in SPLITS), "build.json", ".seqkd.lock"}


def _check_folder(out: Path) -> None:
    """Refuse a folder that holds anything a speech corpus build does not write."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWN_NAMES and not p.name.startswith(".")) if out.exists() else []
    if foreign:
        raise DataError(f"{out}: not a speech corpus folder (it holds {', '.join(foreign[:5])}); choose an empty or new folder")


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def build_speech_corpus(config: SynthesisConfig, corpus: Path, out: Path, force: bool = False,
                        log: Callable[[str], None] = print) -> Path:
    """Build the speech corpus of ``config`` from ``corpus`` into ``out`` and return
    ``out / "manifest.tsv"``.

    A folder already built with the same settings is left untouched (after checking that its
    manifest and tsv files are the ones build.json records); one built with other settings is
    refused with a ``DataError`` unless ``force``, which rebuilds it (as it does any folder),
    removing wav files the new build does not have.
    """
    corpus, out = Path(corpus), Path(out)
    settings = build_settings(config, corpus)
    record_path = out / "build.json"
    if record_path.exists() and not force:
        record = read_json(record_path, "speech corpus build record", "remove the folder, or rebuild it with --force")
        if record.get("settings") != settings:
            raise DataError(
                f"{out} holds a speech corpus built with other settings ({_differences(record.get('settings') or {}, settings)}); "
                "choose another folder, or rebuild it with --force (force=True)"
            )
        for name, digest in record.get("files", {}).items():
            if not (out / name).is_file() or file_sha256(out / name) != digest:
                raise DataError(f"{out}: {name} is missing or not the file build.json records; rebuild with --force (force=True)")
        log(f"{out}: already built with these settings; nothing to do")
        return out / "manifest.tsv"
    _check_folder(out)

    with FolderLock(out, command=f"speech-data {out}"):
        record_path.unlink(missing_ok=True)  # from here on the folder is not a finished build
        start = time.monotonic()
        pairs, skipped = read_pairs(config, corpus)
        if skipped:
            log(f"{corpus}: skipped {skipped:,} rows without an English text or a{'n' if config.language == 'it' else ''} "
                f"{LANGUAGE_NAMES[config.language]} translation")
        jobs = [(f"{split}-{i:05d}", split, text) for split in SPLITS for i, (text, _) in enumerate(pairs[split])]
        translations = {f"{split}-{i:05d}": tr for split in SPLITS for i, (_, tr) in enumerate(pairs[split])}
        total = len(jobs)
        for split in SPLITS:
            (out / "wav" / split).mkdir(parents=True, exist_ok=True)
        workers = max(1, min(config.workers, total))
        log(f"speech-data: synthesising {total:,} utterances ({', '.join(f'{s} {len(pairs[s]):,}' for s in SPLITS)}) "
            f"with {workers} worker{'s' if workers > 1 else ''} into {out}")
        params = {**settings, "out": str(out)}
        results: dict[str, tuple[int, str, dict[str, Any]]] = {}
        if total:
            chunk = max(1, min(16, total // (workers * 20)))
            with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(params,)) as pool:
                step = 0
                for uid, samples, digest, drawn in pool.imap(_synthesize, jobs, chunksize=chunk):
                    results[uid] = (samples, digest, drawn)
                    if len(results) * 10 // total > step:
                        step = len(results) * 10 // total
                        log(f"speech-data: {len(results):,}/{total:,} utterances ({step * 10} %), {time.monotonic() - start:.0f} s")

        lines = ["\t".join(MANIFEST_COLUMNS)]
        split_lines: dict[str, list[str]] = {split: [] for split in SPLITS}
        seconds = {split: 0.0 for split in SPLITS}
        for uid, split, text in jobs:
            samples, digest, drawn = results[uid]
            translation = translations[uid]
            lines.append("\t".join(map(str, (
                uid, split, f"wav/{split}/{uid}.wav", samples, digest, drawn["voice"], drawn["rate"], drawn["pitch"],
                f"{drawn['snr_db']:.1f}", text, translation,
            ))))
            split_lines[split].append(f"{text}\t{translation}")
            seconds[split] += samples / SAMPLE_RATE
        atomic_write_text(out / "manifest.tsv", "\n".join(lines) + "\n")
        for split in SPLITS:
            atomic_write_text(out / f"{split}.tsv", "".join(line + "\n" for line in split_lines[split]))

        wanted = {f"{uid}.wav" for uid, _, _ in jobs}
        stale = [p for split in SPLITS for p in (out / "wav" / split).iterdir() if p.name not in wanted]
        for path in stale:  # from an earlier build with other settings, or temporary files of a killed one
            path.unlink()

        elapsed = time.monotonic() - start
        atomic_write_json(record_path, {
            "settings": settings,
            "source": str(corpus),
            "counts": {split: len(pairs[split]) for split in SPLITS},
            "skipped_source_rows": skipped,
            "audio_hours": {split: round(seconds[split] / 3600, 3) for split in SPLITS},
            "files": {name: file_sha256(out / name) for name in TEXT_FILES},
            "workers": workers,
            "seconds": round(elapsed, 1),
        })
    log(f"speech-data: {total:,} utterances, {sum(seconds.values()) / 3600:.2f} h of audio, in {elapsed:.0f} s: {out / 'manifest.tsv'}")
    return out / "manifest.tsv"
