"""Teacher outputs as artifacts: written once, verified, read many times.

An artifact lives in one folder::

    manifest.json          kind, key (and the parts it was made from), shard list with sizes and sha256
    shard-00000/<name>.npy one .npy file per named array (memory-mapped on read, never unpickled)

Items (training examples) are split into shards of ``shard_size`` consecutive items. A build
writes into ``<folder>.partial/``, one shard at a time, each shard atomically; a killed build
resumes with the shards it has. Only a finished build gets a manifest and is renamed to
``<folder>``, so a partial cache is never readable.

The manifest carries ``manifest_sha256``, the sha256 of the rest of its content in canonical JSON,
and every field reading relies on is checked when it is read: an edited, torn or inconsistent
manifest is refused with a message naming the file and the field, never read as it stands.

The key is a hash of named parts (teacher checkpoint, settings, vocabulary, data). Opening an
artifact whose recorded parts differ from the expected ones fails with a message naming each part
that changed, so a stale cache is never read by mistake.

In a multi-process run the shards are shared out: shard ``i`` is built by rank ``i % W``, each into
its own folder, and rank 0 writes the manifest once all are done. Every shard is computed exactly
as one process would compute it, so the artifact is the same, byte for byte, however many
processes built it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqkd import distributed
from seqkd.errors import SeqkdError
from seqkd.fileio import CorruptFileError, atomic_write_json, atomic_writer, read_json
from seqkd.hashing import file_sha256

MANIFEST = "manifest.json"
FORMAT = "seqkd-cache/1"
CHECKSUM = "manifest_sha256"
CLEAN = "remove the folder or run `seqkd cache clean`"
_SHARD_DIR = re.compile(r"shard-\d{5}")
_SHARD_FILE = re.compile(r"[^./\\][^/\\]*\.npy")  # a plain file name: nothing outside the shard folder
_SHA256 = re.compile(r"[0-9a-f]{64}")

# The offsets arrays of each kind's shards, which ``verify`` checks: kind -> {offsets array -> (what
# it has one entry more than, the arrays whose length its last entry must equal)}. "items" is the
# shard's item count; any other name is an array of the same shard. The layouts are those of
# seqkd.teacher_outputs; a plugin that stores another kind may add its own entry. Kinds without an
# entry get the checks of sizes and sha256 only.
OFFSETS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "topk": {"offsets": ("items", ("values", "indices"))},
    "nbest": {"item_offsets": ("items", ("scores",)), "token_offsets": ("scores", ("tokens",))},
}


class CacheError(SeqkdError):
    pass


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """sha256 of a manifest's content but its checksum, as canonical JSON (so indentation is free)."""
    content = {name: value for name, value in manifest.items() if name != CHECKSUM}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_manifest(folder: Path, manifest: Any) -> None:
    """Refuse a manifest that was edited, or whose fields disagree with each other or the folder."""
    path = folder / MANIFEST

    def refuse(field: str, problem: str) -> CacheError:
        return CacheError(f"{path}: {field} {problem}; {CLEAN}")

    if not isinstance(manifest, dict):
        raise CacheError(f"{path}: not a JSON object; {CLEAN}")
    if manifest.get("format") != FORMAT:
        raise CacheError(f"{folder}: not a seqkd cache (format {manifest.get('format')!r})")
    if CHECKSUM not in manifest:
        raise refuse(f"field {CHECKSUM!r}", "is missing (the manifest was written by an older seqkd or edited)")
    if manifest[CHECKSUM] != manifest_checksum(manifest):
        raise CacheError(f"{path} was modified after it was written (checksum mismatch); {CLEAN}")
    types = {"kind": str, "key": str, "parts": dict, "num_items": int, "shard_size": int, "meta": dict, "shards": list}
    for field, kind in types.items():
        if field not in manifest:
            raise refuse(f"field {field!r}", "is missing")
        value = manifest[field]
        if not isinstance(value, kind) or (kind is int and (not _is_int(value) or value < 1)):
            raise refuse(f"field {field!r}", f"is {value!r}, not {'a positive integer' if kind is int else 'a ' + kind.__name__}")
    num_items, shard_size, shards = manifest["num_items"], manifest["shard_size"], manifest["shards"]
    expected = math.ceil(num_items / shard_size)
    if len(shards) != expected:
        raise refuse(
            "field 'shards'",
            f"lists {len(shards)} shards, but num_items {num_items} in shards of shard_size {shard_size} makes {expected}",
        )
    for i, shard in enumerate(shards):
        where = f"shards[{i}]"
        if not isinstance(shard, dict) or not {"dir", "start", "stop", "files"} <= set(shard):
            raise refuse(where, "is not an object with dir, start, stop and files")
        start, stop = i * shard_size, min((i + 1) * shard_size, num_items)
        if shard["dir"] != f"shard-{i:05d}":
            raise refuse(f"{where}.dir", f"is {shard['dir']!r}, not 'shard-{i:05d}'")
        if (shard["start"], shard["stop"]) != (start, stop):
            raise refuse(
                f"{where}.start/stop", f"are {shard['start']!r}/{shard['stop']!r}, but shard_size {shard_size} makes {start}/{stop}"
            )
        files = shard["files"]
        if not isinstance(files, dict) or not files:
            raise refuse(f"{where}.files", "is not a non-empty object")
        for name, meta in files.items():
            if not _SHARD_FILE.fullmatch(name):
                raise refuse(f"{where}.files", f"names {name!r}, not a plain <name>.npy file name")
            if (not isinstance(meta, dict) or not _is_int(meta.get("bytes")) or meta["bytes"] < 0
                    or not isinstance(meta.get("sha256"), str) or not _SHA256.fullmatch(meta["sha256"])):
                raise refuse(f"{where}.files[{name!r}]", "is not an object with bytes (an integer) and sha256 (64 hex digits)")
    if [sorted(s["files"]) for s in shards].count(sorted(shards[0]["files"])) != len(shards):
        raise refuse("field 'shards'", "lists different files in different shards")
    on_disk = sorted(p.name for p in folder.iterdir() if _SHARD_DIR.fullmatch(p.name))
    listed = [s["dir"] for s in shards]
    if on_disk != listed:
        missing, extra = sorted(set(listed) - set(on_disk)), sorted(set(on_disk) - set(listed))
        problem = f"lists {', '.join(missing)}, missing from the folder" if missing else f"does not list {', '.join(extra)} of the folder"
        raise refuse("field 'shards'", problem)


def make_key(parts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _describe_change(name: str, recorded: dict[str, str], expected: dict[str, str]) -> str:
    changed = [
        f"{part}: cache has {recorded.get(part)!r}, this run needs {expected.get(part)!r}"
        for part in sorted(set(recorded) | set(expected))
        if recorded.get(part) != expected.get(part)
    ]
    return f"cache {name} was built for other inputs; refusing to read it ({'; '.join(changed)})"


@dataclass
class Shard:
    start: int
    stop: int
    arrays: dict[str, np.ndarray]


class Artifact:
    """A finished, verified artifact opened read-only (arrays are memory-mapped)."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder, self.manifest = folder, manifest
        self.shard_size: int = manifest["shard_size"]
        self._shards: dict[int, Shard] = {}

    @classmethod
    def read(cls, folder: Path) -> "Artifact":
        """Open a finished artifact for inspection, without checking its key."""
        path = folder / MANIFEST
        if not path.exists():
            partial = f" (an unfinished build is in {partial_dir(folder)})" if partial_dir(folder).exists() else ""
            raise CacheError(f"{folder}: no finished cache here{partial}")
        try:
            manifest = read_json(path, "cache manifest", fix=CLEAN)
        except CorruptFileError as exc:
            raise CacheError(str(exc)) from None
        _check_manifest(folder, manifest)
        return cls(folder, manifest)

    @classmethod
    def open(cls, folder: Path, kind: str, parts: dict[str, str], *, full_check: bool = True) -> "Artifact":
        """Open an artifact for reading: refused unless its kind and key match and its shards are intact."""
        artifact = cls.read(folder)
        if artifact.manifest["kind"] != kind:
            raise CacheError(f"{folder}: a {artifact.manifest['kind']!r} cache, not {kind!r}")
        if artifact.manifest["key"] != make_key(parts):
            raise CacheError(_describe_change(str(folder), artifact.manifest["parts"], parts))
        artifact.verify(hashes=full_check)
        return artifact

    def verify(self, *, hashes: bool = True) -> None:
        """Check every shard file's size; with ``hashes`` also its sha256 and that its arrays load and
        agree with the shard's item count (see ``OFFSETS``). A damaged shard is refused."""
        for index, shard in enumerate(self.manifest["shards"]):
            for name, meta in shard["files"].items():
                path = self._checked_path(shard, name)
                if hashes and file_sha256(path) != meta["sha256"]:
                    raise CacheError(f"{path}: corrupted (sha256 differs from the manifest); {CLEAN}")
            if hashes:
                self._check_arrays(index)

    def _checked_path(self, shard: dict[str, Any], name: str) -> Path:
        """The path of a shard file, refused unless it exists with the size the manifest records."""
        path = self.folder / shard["dir"] / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CacheError(f"{path}: missing shard file; {CLEAN}") from None
        if size != shard["files"][name]["bytes"]:
            raise CacheError(
                f"{path}: truncated or altered ({size} bytes, manifest says {shard['files'][name]['bytes']}); {CLEAN}"
            )
        return path

    def _check_arrays(self, index: int) -> None:
        """Offsets arrays must start at 0, never decrease, count the shard's items (or the entries of
        the array they index) and end at the length of the arrays they index."""
        entry, arrays = self.manifest["shards"][index], self.shard(index).arrays
        items = entry["stop"] - entry["start"]
        for name, (counted, targets) in OFFSETS.get(self.manifest["kind"], {}).items():
            if name not in arrays:
                continue
            path = self.folder / entry["dir"] / f"{name}.npy"
            offsets = np.asarray(arrays[name])
            count = items if counted == "items" else len(arrays[counted]) if counted in arrays else None
            if offsets.ndim != 1 or (count is not None and len(offsets) != count + 1):
                raise CacheError(f"{path}: holds {offsets.shape} offsets, {counted} needs {count} + 1; {CLEAN}")
            if len(offsets) == 0 or offsets[0] != 0 or bool((np.diff(offsets) < 0).any()):
                raise CacheError(f"{path}: offsets do not start at 0 and rise; {CLEAN}")
            for target in targets:
                if target in arrays and int(offsets[-1]) != len(arrays[target]):
                    raise CacheError(
                        f"{path}: offsets end at {int(offsets[-1])}, but {target}.npy holds {len(arrays[target])} rows; {CLEAN}"
                    )

    @property
    def num_items(self) -> int:
        return self.manifest["num_items"]

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest["meta"]

    def shard(self, index: int) -> Shard:
        """One shard's arrays, memory-mapped; a shard file of the wrong size or that is not an
        array is refused with ``CacheError`` naming it."""
        if index not in self._shards:
            entry = self.manifest["shards"][index]
            arrays = {Path(name).stem: self._load(self._checked_path(entry, name)) for name in entry["files"]}
            self._shards[index] = Shard(entry["start"], entry["stop"], arrays)
        return self._shards[index]

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CacheError(f"{path}: not a readable array ({exc}); {CLEAN}") from None

    def shard_of(self, item: int) -> Shard:
        return self.shard(item // self.shard_size)

    def nbytes(self) -> int:
        """Bytes of all shard files, each checked on disk against the manifest."""
        return sum(self._checked_path(s, name).stat().st_size for s in self.manifest["shards"] for name in s["files"])

    @classmethod
    def open_on_every_rank(cls, folder: Path, kind: str, parts: dict[str, str]) -> "Artifact":
        """``open`` where rank 0 alone reads every shard for its sha256 and the other ranks check sizes."""
        def verify_fully() -> None:
            cls.open(folder, kind, parts)

        distributed.on_main(verify_fully)
        return cls.open(folder, kind, parts, full_check=distributed.is_main())


def partial_dir(folder: Path) -> Path:
    return folder.with_name(folder.name + ".partial")


def _build_key(state_path: Path) -> str | None:
    """The key an unfinished build was started for; None when its state file is unreadable (the
    build is then discarded, which costs time but never reads a shard built for other inputs)."""
    try:
        state = read_json(state_path, "cache build state")
    except CorruptFileError:
        return None
    return state.get("key") if isinstance(state, dict) else None


def build_artifact(
    folder: Path,
    kind: str,
    parts: dict[str, str],
    num_items: int,
    shard_size: int,
    make_shard: Callable[[int, int], dict[str, np.ndarray]],
    meta: dict[str, Any],
    progress: Callable[[int, int], None] | None = None,
) -> Artifact:
    """Build (or finish building) an artifact; ``make_shard(start, stop)`` computes one shard.

    An existing finished artifact with the same key is returned as it is; one with another key is
    refused (remove it with ``seqkd cache clean``). An unfinished build with another key is
    discarded, since nothing can have read it. In a multi-process run every rank calls this
    together; ``make_shard`` runs on the rank that builds the shard.
    """
    if (folder / MANIFEST).exists():
        return Artifact.open_on_every_rank(folder, kind, parts)
    if num_items == 0:
        raise CacheError(f"{folder}: nothing to cache (0 items)")
    key = make_key(parts)
    work = partial_dir(folder)
    state_path = work / "build.json"

    def start_build() -> None:
        if state_path.exists() and _build_key(state_path) != key:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_json(state_path, {"key": key, "parts": parts})

    distributed.on_main(start_build)
    starts = list(range(0, num_items, shard_size))
    for i, start in enumerate(starts):
        if i % distributed.world_size() != distributed.rank():
            continue
        stop = min(start + shard_size, num_items)
        shard_dir = work / f"shard-{i:05d}"
        done = shard_dir / "done.json"
        if not done.exists():
            tmp = work / f".tmp-shard-{i:05d}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for name, array in make_shard(start, stop).items():
                with atomic_writer(tmp / f"{name}.npy") as f:  # a full disk is a DiskFullError
                    np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(tmp.glob("*.npy"))}
            atomic_write_json(tmp / "done.json", files)
            shutil.rmtree(shard_dir, ignore_errors=True)
            os.replace(tmp, shard_dir)
        if progress:
            progress(stop, num_items)
    distributed.barrier()

    def finish_build() -> None:
        shards = [
            {"dir": f"shard-{i:05d}", "start": start, "stop": min(start + shard_size, num_items),
             "files": read_json(work / f"shard-{i:05d}" / "done.json", "shard list", fix=f"remove {work}")}
            for i, start in enumerate(starts)
        ]
        manifest = {"format": FORMAT, "kind": kind, "key": key, "parts": parts, "num_items": num_items,
                    "shard_size": shard_size, "meta": meta, "shards": shards}
        atomic_write_json(work / MANIFEST, {**manifest, CHECKSUM: manifest_checksum(manifest)})
        state_path.unlink()
        os.replace(work, folder)

    distributed.on_main(finish_build)
    return Artifact.open_on_every_rank(folder, kind, parts)
