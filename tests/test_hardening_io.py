"""Files under stress: edited or torn caches, full disks, concurrent runs and odd encodings."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from seqkd.checkpoint import CheckpointError, atomic_save, safe_load
from seqkd.fileio import (
    LOCK_NAME,
    CorruptFileError,
    DiskFullError,
    FolderLock,
    FolderLocked,
    atomic_write_json,
    atomic_write_text,
    read_json,
)

ROOT = Path(__file__).resolve().parents[1]


# -- atomic writes and full disks ---------------------------------------------------------------


def fail_on_call(monkeypatch, name: str, n: int) -> list[int]:
    """Make ``os.<name>`` raise ENOSPC on its n-th call (1-based) and only then."""
    real = getattr(os, name)
    calls = [0]

    def patched(*args):
        calls[0] += 1
        if calls[0] == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args)

    monkeypatch.setattr(os, name, patched)
    return calls


def test_full_disk_mid_write_keeps_the_previous_file_and_a_retry_succeeds(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"step": 1})
    before = path.read_bytes()
    calls = fail_on_call(monkeypatch, "write", 2)  # the second 1 MiB chunk of a 3 MiB text
    with pytest.raises(DiskFullError) as caught:
        atomic_write_text(path, "x" * (3 << 20))
    assert str(caught.value) == (
        f"no space left on device writing {path}; the previous {path} is unchanged; "
        "free space and run the same command again"
    )
    assert calls[0] == 2
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # the partial temporary file is gone
    monkeypatch.undo()
    atomic_write_json(path, {"step": 2})
    assert read_json(path, "run state") == {"step": 2}


def test_full_disk_at_fsync_of_a_new_file_creates_nothing(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "new.txt"
    fail_on_call(monkeypatch, "fsync", 1)
    with pytest.raises(DiskFullError, match=rf"writing {path}; {path} was not created"):
        atomic_write_text(path, "hello")
    assert list(path.parent.iterdir()) == []


def test_read_json_refuses_an_empty_or_torn_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("")
    with pytest.raises(CorruptFileError, match=rf"{path}: the run state is empty, not valid JSON .*crash.*; remove it"):
        read_json(path, "run state")
    path.write_text('{"step": 1')
    with pytest.raises(CorruptFileError, match=rf"{path}: the run state is not valid JSON \(.* line 1 column 11\); fix it"):
        read_json(path, "run state", fix="fix it")


def test_atomic_save_on_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    atomic_save({"step": 10, "w": torch.ones(3)}, path)
    fail_on_call(monkeypatch, "fsync", 1)
    with pytest.raises(DiskFullError, match=rf"no space left on device writing {path}; the previous {path} is unchanged"):
        atomic_save({"step": 20, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert safe_load(path)["step"] == 10  # still usable
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    atomic_save({"step": 20, "w": torch.zeros(3)}, path)
    assert safe_load(path)["step"] == 20


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_safe_load_refuses_pickles_without_pytorchs_advice(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Payload()}, path)
    with pytest.raises(CheckpointError) as caught:
        safe_load(path)
    assert str(caught.value) == (
        f"{path} holds objects other than tensors and plain values; seqkd loads such files weights-only "
        "and refuses this one (it was not written by seqkd or was tampered with)"
    )
    assert "weights_only=False" not in str(caught.value) and caught.value.__cause__ is None
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="holds objects other than tensors"):
        safe_load(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"evil\.pt: cannot be loaded as a weights-only checkpoint \(the file is empty\)"):
        safe_load(path)


# -- the run lock -------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from seqkd.fileio import FolderLock
    FolderLock(Path(sys.argv[1]), command="seqkd run holder.yaml").acquire()
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def start_holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_a_folder_locked_by_a_live_process_is_refused(tmp_path):
    proc = start_holder(tmp_path)
    try:
        with pytest.raises(FolderLocked) as caught:
            FolderLock(tmp_path).acquire()
        message = str(caught.value)
        assert message.startswith(f"{tmp_path} is in use by another seqkd run (pid {proc.pid} on host ")
        assert message.endswith(": seqkd run holder.yaml); wait for it to finish or use another output.dir")
    finally:
        proc.stdin.close()  # the holder exits normally, leaving its lock file behind
        proc.wait(timeout=30)
    with FolderLock(tmp_path, command="second") as lock:  # a lock whose holder has exited is free
        assert read_json(tmp_path / LOCK_NAME, "lock")["command"] == "second"
        assert lock.took_over["pid"] == proc.pid
        with pytest.raises(FolderLocked, match=f"pid {os.getpid()} "):
            FolderLock(tmp_path).acquire()  # also within one process
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    proc = start_holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdin.close()
    assert read_json(tmp_path / LOCK_NAME, "lock")["pid"] == proc.pid  # the stale file is still there
    lock = FolderLock(tmp_path).acquire()
    assert lock.took_over["pid"] == proc.pid
    assert read_json(tmp_path / LOCK_NAME, "lock")["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
