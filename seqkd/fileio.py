"""Files that survive crashes, full disks, concurrent runs and odd encodings.

- Writes are atomic: a temporary file in the same folder is written, flushed, fsynced and renamed
  over the target, so a crash, a kill or a full disk leaves either the previous file or the new
  one, never a torn or empty one. A full disk is reported as ``DiskFullError`` (naming the file and
  saying the previous one is unchanged) rather than as an ``OSError`` traceback.
- ``read_json`` turns a file that is not JSON (e.g. empty after a crash of an older writer) into a
  ``CorruptFileError`` naming the file and what to do.
- ``FolderLock`` keeps two runs from writing into one output folder at once. It is an advisory
  ``flock`` on ``<folder>/.seqkd.lock``, which the kernel drops when the holder dies (SIGKILL and
  out-of-memory kills included), so a lock left behind by a dead run is taken over, never waited on.
- ``read_lines`` reads a text corpus (plain or gzipped) as UTF-8 line by line, dropping a
  byte-order mark, and reports bad bytes or a damaged gzip as a ``DataError`` with ``file:line``.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import json
import os
import socket
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from seqkd.errors import DataError, SeqkdError

LOCK_NAME = ".seqkd.lock"
_CHUNK = 1 << 20  # bytes per os.write call
_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class CorruptFileError(SeqkdError):
    """A file seqkd wrote earlier cannot be parsed (for example empty after a crash)."""


class MissingFileError(SeqkdError):
    """A file seqkd needs to read does not exist."""


class DiskFullError(SeqkdError):
    """A write ran out of disk space (or quota); the previous file at the path is unchanged."""


class FolderLocked(SeqkdError):
    """Another live seqkd process holds the folder's lock."""


# -- atomic writes ------------------------------------------------------------------------------


def _disk_full(path: Path, existed: bool, exc: OSError) -> DiskFullError:
    previous = f"the previous {path} is unchanged" if existed else f"{path} was not created"
    return DiskFullError(
        f"{_FULL[exc.errno]} writing {path}; {previous}; free space and run the same command again"
    )


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder (which makes a rename in it durable); some filesystems cannot open
    a folder, which is harmless."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; it replaces ``path`` only on success.

    On any failure the temporary file is removed and ``path`` keeps its previous content; a full
    disk (ENOSPC, EDQUOT), wherever it strikes (creating, writing, fsync, rename), becomes
    ``DiskFullError``.
    """
    existed = path.exists()
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise _disk_full(path, existed, exc) from exc
        raise
    fsync_path(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (see ``atomic_writer``)."""
    with atomic_writer(path) as f:
        view = memoryview(data)
        fd = f.fileno()
        while view:  # os.write may write less than asked for; continue where it stopped
            view = view[os.write(fd, view[:_CHUNK]):]


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path, what: str, fix: str = "remove it and run the same command again") -> Any:
    """The JSON value in ``path``; ``what`` names the file's role in messages (e.g. "run state").

    A file that is not JSON is refused with ``CorruptFileError`` saying so and ``fix``, the thing a
    user should do about it, rather than with a ``json`` traceback.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file (the {what})") from None
    if not data.strip():
        raise CorruptFileError(
            f"{path}: the {what} is empty, not valid JSON (probably cut short by a crash or a full disk); {fix}"
        )
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CorruptFileError(
            f"{path}: the {what} is not valid JSON (byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8); {fix}"
        ) from None
    except json.JSONDecodeError as exc:
        raise CorruptFileError(
            f"{path}: the {what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); {fix}"
        ) from None


# -- the run lock -------------------------------------------------------------------------------


def _holder(path: Path) -> dict[str, Any]:
    """What a lock file says about its holder; empty while the holder is still writing it."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class FolderLock:
    """Exclusive use of a folder by one process: ``with FolderLock(output_dir): ...``.

    The lock is a ``flock`` held on an open descriptor of ``<folder>/.seqkd.lock`` for the life of
    the lock; the file holds the holder's pid, host, start time and command so that a refused run
    can say who is in the way. The kernel releases a ``flock`` when its process dies, so a lock
    file whose ``flock`` is free was left by a dead run and is taken over (``took_over`` then holds
    what it said). Locks are per open file: a second ``FolderLock`` on the same folder is refused
    even within one process. In a multi-process run take it on the main rank only. ``flock`` is
    advisory and may not be enforced across machines on some network filesystems.
    """

    def __init__(self, folder: Path, command: str | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command if command is not None else " ".join(sys.argv)
        self.took_over: dict[str, Any] | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        """Take the lock or raise ``FolderLocked`` naming the live holder; never waits."""
        if self._fd is not None:
            raise SeqkdError(f"{self.path}: this lock is already held by this FolderLock")
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._locked() from None
            except BaseException:
                os.close(fd)
                raise
            # The holder we waited on may have removed the file between our open and flock; a lock
            # on an unlinked file excludes nobody, so start again on the file now at the path.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _holder(self.path)
        self.took_over = previous or None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
            "command": self.command,
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _FULL:
                raise _disk_full(self.path, True, exc) from exc
            raise
        self._fd = fd
        return self

    def _locked(self) -> FolderLocked:
        info = _holder(self.path)
        who = (
            f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('started', '?')}: "
            f"{info.get('command', '?')}"
            if info else "its details are still being written"
        )
        return FolderLocked(
            f"{self.folder} is in use by another seqkd run ({who}); wait for it to finish or use another output.dir"
        )

    def release(self) -> None:
        """Remove the lock file and drop the lock; a no-op when not held."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked, so no one else's file is removed
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


# -- text corpora -------------------------------------------------------------------------------


def _decode_line(raw: bytes, path: Path | str, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(raw[: exc.start].decode("utf-8")) + 1
        hint = " (the file starts with a UTF-16 byte-order mark)" if lineno == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise DataError(
            f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column}){hint}; "
            "convert the file to UTF-8"
        ) from None


def _open_binary(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes, transparently decompressed when named ``.gz``."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix != ".gz":
        return path.open("rb")
    with path.open("rb") as f:
        magic = f.read(2)
    if magic != _GZIP_MAGIC:
        raise DataError(
            f"{path}: not a gzip file although named .gz; compress it with gzip or remove .gz from its name"
        )
    return gzip.open(path, "rb")  # type: ignore[return-value]


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for every line of a UTF-8 text file, plain or gzipped.

    Lines end at ``\\n``; a ``\\r`` before it is dropped (other characters, Unicode line and
    paragraph separators included, belong to the line). A UTF-8 byte-order mark at the start of
    the file is removed. Bytes that are not UTF-8 and a truncated or corrupt gzip stream are
    reported as ``DataError`` naming the file (and line).
    """
    lineno = 0
    try:
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                raw = raw.removesuffix(b"\n").removesuffix(b"\r")
                yield lineno, _decode_line(raw, path, lineno)
    except EOFError:
        raise DataError(
            f"{path}: ends early after line {lineno}: the file is truncated; copy or download it again"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path}: corrupt gzip data after line {lineno} ({exc}); copy or download it again"
        ) from None


def read_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSON-lines file (plain or gzipped);
    a line that is not JSON, or not a JSON object, is a ``DataError`` naming file and line."""
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not a JSON object ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: not a JSON object but {type(row).__name__}")
        yield lineno, row
