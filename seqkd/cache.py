"""Teacher outputs as artifacts: written once, verified, read many times.

An artifact lives in one folder::

    manifest.json          kind, key (and the parts it was made from), shard list with sizes and sha256
    shard-00000/<name>.npy one .npy file per named array (memory-mapped on read, never unpickled)

Items (training examples) are split into shards of ``shard_size`` consecutive items. A build
writes into ``<folder>.partial/``, one shard at a time, each shard atomically; a killed build
resumes with the shards it has. Only a finished build gets a manifest and is renamed to
``<folder>``, so a partial cache is never readable.

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
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqkd import distributed
from seqkd.errors import SeqkdError
from seqkd.hashing import file_sha256

MANIFEST = "manifest.json"
FORMAT = "seqkd-cache/1"


class CacheError(SeqkdError):
    pass


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
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise CacheError(f"{folder}: not a seqkd cache (format {manifest.get('format')!r})")
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
        """Check every shard file's size (and sha256); a truncated or corrupted shard is refused."""
        for shard in self.manifest["shards"]:
            for name, meta in shard["files"].items():
                path = self.folder / shard["dir"] / name
                if not path.exists():
                    raise CacheError(f"{path}: missing shard file")
                if path.stat().st_size != meta["bytes"]:
                    raise CacheError(
                        f"{path}: truncated or altered ({path.stat().st_size} bytes, manifest says {meta['bytes']})"
                    )
                if hashes and file_sha256(path) != meta["sha256"]:
                    raise CacheError(f"{path}: corrupted (sha256 differs from the manifest)")

    @property
    def num_items(self) -> int:
        return self.manifest["num_items"]

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest["meta"]

    def shard(self, index: int) -> Shard:
        if index not in self._shards:
            entry = self.manifest["shards"][index]
            arrays = {
                Path(name).stem: np.load(self.folder / entry["dir"] / name, mmap_mode="r", allow_pickle=False)
                for name in entry["files"]
            }
            self._shards[index] = Shard(entry["start"], entry["stop"], arrays)
        return self._shards[index]

    def shard_of(self, item: int) -> Shard:
        return self.shard(item // self.shard_size)

    def nbytes(self) -> int:
        return sum(m["bytes"] for s in self.manifest["shards"] for m in s["files"].values())

    @classmethod
    def open_on_every_rank(cls, folder: Path, kind: str, parts: dict[str, str]) -> "Artifact":
        """``open`` where rank 0 alone reads every shard for its sha256 and the other ranks check sizes."""
        def verify_fully() -> None:
            cls.open(folder, kind, parts)

        distributed.on_main(verify_fully)
        return cls.open(folder, kind, parts, full_check=distributed.is_main())


def partial_dir(folder: Path) -> Path:
    return folder.with_name(folder.name + ".partial")


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
        if state_path.exists() and json.loads(state_path.read_text()).get("key") != key:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps({"key": key, "parts": parts}))

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
                with open(tmp / f"{name}.npy", "wb") as f:
                    np.save(f, np.ascontiguousarray(array), allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
            files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(tmp.glob("*.npy"))}
            (tmp / "done.json").write_text(json.dumps(files))
            shutil.rmtree(shard_dir, ignore_errors=True)
            os.replace(tmp, shard_dir)
        if progress:
            progress(stop, num_items)
    distributed.barrier()

    def finish_build() -> None:
        shards = [
            {"dir": f"shard-{i:05d}", "start": start, "stop": min(start + shard_size, num_items),
             "files": json.loads((work / f"shard-{i:05d}" / "done.json").read_text())}
            for i, start in enumerate(starts)
        ]
        manifest = {"format": FORMAT, "kind": kind, "key": key, "parts": parts, "num_items": num_items,
                    "shard_size": shard_size, "meta": meta, "shards": shards}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        state_path.unlink()
        os.replace(work, folder)

    distributed.on_main(finish_build)
    return Artifact.open_on_every_rank(folder, kind, parts)
