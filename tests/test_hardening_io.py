"""Files under stress: edited or torn caches, full disks, concurrent runs and odd encodings."""

from __future__ import annotations

import errno
import gzip
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from seqkd.cache import Artifact, CacheError, build_artifact, manifest_checksum
from seqkd.checkpoint import CheckpointError, atomic_save, safe_load
from seqkd.cli import main
from seqkd.errors import DataError
from seqkd.hashing import file_sha256
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
from seqkd.tasks.ner.corpus import Sentence, read_conll, split_columns
from seqkd.tasks.seq2seq.corpus import Pair, read_parallel
from seqkd.tasks.translation.corpus import read_tsv

ROOT = Path(__file__).resolve().parents[1]
CLEAN = "remove the folder or run `seqkd cache clean`"


# -- cache manifests and shards -----------------------------------------------------------------

PARTS = {"teacher": "t1", "settings": "k=2", "vocabulary": "v1", "data": "d1"}


def topk_like(start: int, stop: int) -> dict[str, np.ndarray]:
    """A shard laid out like a top-k cache: item i has i % 3 + 1 rows."""
    lengths = [i % 3 + 1 for i in range(start, stop)]
    rows = sum(lengths)
    return {
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "values": np.zeros((rows, 2), dtype=np.float16),
        "indices": np.ones((rows, 2), dtype=np.uint16),
        "vocab_size": np.array([50], dtype=np.int64),
    }


def build(folder: Path, make_shard=topk_like) -> Path:
    build_artifact(folder, "topk", PARTS, 10, 4, make_shard, meta={"k": 2})
    return folder


def edit_manifest(folder: Path, change, *, recompute: bool) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    if recompute:
        manifest["manifest_sha256"] = manifest_checksum(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def cli_error(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_an_edited_manifest_is_refused_by_read_open_and_verify(tmp_path, capsys):
    folder = build(tmp_path / "c")
    assert main(["cache", "verify", str(folder)]) == 0
    capsys.readouterr()
    edit_manifest(folder, lambda m: m["meta"].update(k=4), recompute=False)
    message = f"{folder}/manifest.json was modified after it was written (checksum mismatch); {CLEAN}"
    with pytest.raises(CacheError) as caught:
        Artifact.read(folder)
    assert str(caught.value) == message
    with pytest.raises(CacheError, match="checksum mismatch"):
        Artifact.open(folder, "topk", PARTS)
    assert message in cli_error(capsys, "cache", "verify", str(folder))
    assert message in cli_error(capsys, "cache", "info", str(folder))


def test_an_edited_shard_size_is_refused_with_or_without_a_recomputed_checksum(tmp_path, capsys):
    folder = build(tmp_path / "c")
    edit_manifest(folder, lambda m: m.update(shard_size=5), recompute=False)
    with pytest.raises(CacheError, match="checksum mismatch"):
        Artifact.read(folder)
    edit_manifest(folder, lambda m: m.update(shard_size=5), recompute=True)
    with pytest.raises(CacheError) as caught:
        Artifact.read(folder)
    assert str(caught.value) == (
        f"{folder}/manifest.json: field 'shards' lists 3 shards, but num_items 10 in shards of shard_size 5 makes 2; {CLEAN}"
    )
    edit_manifest(folder, lambda m: m.update(shard_size=4), recompute=True)
    Artifact.read(folder)  # consistent again
    edit_manifest(folder, lambda m: m["shards"][1]["files"]["values.npy"].update(bytes=1), recompute=True)
    err = cli_error(capsys, "cache", "verify", str(folder))
    assert f"{folder}/shard-00001/values.npy: truncated or altered" in err and "manifest says 1" in err


def test_manifest_fields_that_disagree_with_each_other_or_the_folder_are_refused(tmp_path):
    folder = build(tmp_path / "c")
    cases = [
        (lambda m: m.pop("num_items"), "field 'num_items' is missing"),
        (lambda m: m.update(num_items="10"), "field 'num_items' is '10', not a positive integer"),
        (lambda m: m.update(num_items=13), r"field 'shards' lists 3 shards, but num_items 13 .* makes 4"),
        (lambda m: m.update(num_items=11), r"shards\[2\].start/stop are 8/10, but shard_size 4 makes 8/11"),
        (lambda m: m["shards"][0].update(dir="../elsewhere"), r"shards\[0\].dir is '../elsewhere', not 'shard-00000'"),
        (lambda m: m["shards"][2]["files"].pop("values.npy"), "field 'shards' lists different files in different shards"),
        (lambda m: m["shards"][0]["files"]["offsets.npy"].update(sha256="x"), r"shards\[0\].files\['offsets.npy'\] is not an object"),
    ]
    for change, problem in cases:
        original = (folder / "manifest.json").read_text()
        edit_manifest(folder, change, recompute=True)
        with pytest.raises(CacheError, match=rf"^{folder}/manifest.json: {problem}.*; remove the folder"):
            Artifact.read(folder)
        (folder / "manifest.json").write_text(original)
    (folder / "shard-00003").mkdir()
    with pytest.raises(CacheError, match="field 'shards' does not list shard-00003 of the folder"):
        Artifact.read(folder)
    (folder / "shard-00003").rmdir()
    (folder / "shard-00002").rename(tmp_path / "moved")
    with pytest.raises(CacheError, match="field 'shards' lists shard-00002, missing from the folder"):
        Artifact.read(folder)


def test_a_manifest_that_is_not_json_is_refused(tmp_path, capsys):
    folder = build(tmp_path / "c")
    path = folder / "manifest.json"
    path.write_text(path.read_text()[:100])
    with pytest.raises(CacheError, match=rf"^{path}: the cache manifest is not valid JSON \(.*line \d+ column \d+\); {CLEAN}"):
        Artifact.read(folder)
    path.write_text("")
    assert f"{path}: the cache manifest is empty, not valid JSON" in cli_error(capsys, "cache", "info", str(folder))
    path.write_text("[1, 2]")
    with pytest.raises(CacheError, match=rf"{path}: not a JSON object"):
        Artifact.read(folder)


def test_a_truncated_shard_is_a_cache_error_in_info_shard_and_nbytes(tmp_path, capsys):
    folder = build(tmp_path / "c")
    shard = folder / "shard-00001" / "offsets.npy"
    shard.write_bytes(shard.read_bytes()[:60])  # inside the .npy header
    artifact = Artifact.read(folder)
    with pytest.raises(CacheError, match=rf"^{shard}: truncated or altered \(60 bytes, manifest says \d+\)"):
        artifact.shard(1)
    with pytest.raises(CacheError, match=rf"^{shard}: truncated or altered"):
        artifact.nbytes()
    assert f"{shard}: truncated or altered" in cli_error(capsys, "cache", "info", str(folder))
    artifact.shard(0)  # the intact shards stay readable


def replace_array(folder: Path, shard: int, name: str, array: np.ndarray) -> None:
    """Put another array in a shard and make the manifest agree (size, sha256, checksum), as a
    buggy writer or a careful forger would: only the arrays themselves can then disagree."""
    path = folder / f"shard-{shard:05d}" / f"{name}.npy"
    np.save(path, array)
    meta = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    edit_manifest(folder, lambda m: m["shards"][shard]["files"].update({f"{name}.npy": meta}), recompute=True)


def test_verify_checks_offsets_against_item_counts_and_rows(tmp_path, capsys):
    folder = build(tmp_path / "c")
    values = np.load(folder / "shard-00000" / "values.npy")
    replace_array(folder, 0, "values", values[:-1])
    err = cli_error(capsys, "cache", "verify", str(folder))
    assert f"{folder}/shard-00000/offsets.npy: offsets end at 7, but values.npy holds 6 rows" in err
    replace_array(folder, 0, "values", values)
    assert main(["cache", "verify", str(folder)]) == 0
    offsets = np.load(folder / "shard-00001" / "offsets.npy")
    replace_array(folder, 1, "offsets", offsets[:-1])
    with pytest.raises(CacheError, match=r"shard-00001/offsets.npy: holds \(4,\) offsets, items needs 4 \+ 1"):
        Artifact.open(folder, "topk", PARTS)
    replace_array(folder, 1, "offsets", offsets[::-1].copy())
    with pytest.raises(CacheError, match=r"shard-00001/offsets.npy: offsets do not start at 0 and rise"):
        Artifact.open(folder, "topk", PARTS)
    Artifact.open(folder, "topk", PARTS, full_check=False)  # sizes alone are checked when a rank opens it


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


def test_full_disk_during_a_cache_build_is_reported_and_the_build_resumes(tmp_path, monkeypatch):
    fail_on_call(monkeypatch, "fsync", 5)  # file and folder of build.json, of offsets.npy, then values.npy
    with pytest.raises(DiskFullError, match=r"no space left on device writing .*c\.partial/\.tmp-shard-00000/values\.npy;"):
        build(tmp_path / "c")
    monkeypatch.undo()
    build(tmp_path / "c")
    assert Artifact.open(tmp_path / "c", "topk", PARTS).num_items == 10


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


# -- corpus readers -----------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"


def ner(path: Path, **options) -> list[Sentence]:
    return read_conll(path, **{"tag_column": -1, "scheme": "BIO", "repair": False, **options})


def test_a_byte_order_mark_is_not_part_of_the_first_source_or_token(tmp_path):
    tsv = tmp_path / "c.tsv"
    tsv.write_bytes(BOM + "Hello\tHola\nBye\tAdiós\n".encode())
    assert list(read_tsv(tsv, 0, 1)) == [Pair("Hello", "Hola"), Pair("Bye", "Adiós")]
    packed = tmp_path / "c.tsv.gz"
    packed.write_bytes(gzip.compress(tsv.read_bytes()))
    assert next(read_tsv(packed, 0, 1)) == Pair("Hello", "Hola")
    (tmp_path / "t.en").write_bytes(BOM + b"Hello\r\nBye\r\n")
    (tmp_path / "t.es").write_bytes(BOM + "Hola\nAdiós\n".encode())
    assert list(read_parallel(tmp_path / "t.en", tmp_path / "t.es")) == [Pair("Hello", "Hola"), Pair("Bye", "Adiós")]
    conll = tmp_path / "n.conll"
    conll.write_bytes(BOM + b"EU\tB-ORG\nrejects\tO\n")
    assert ner(conll)[0].tokens == ["EU", "rejects"]
    assert ner(conll, text=conll.read_text(encoding="utf-8"))[0].tokens == ["EU", "rejects"]


def test_ner_columns_split_at_tabs_and_spaces_only(tmp_path):
    conll = tmp_path / "n.conll"
    conll.write_text(
        "東京\u3000タワー\tB-LOC\n"  # a full-width space inside a token
        "New\u00a0York\tI-LOC\n"  # a no-break space too
        "\u3000\n"  # a line of Unicode whitespace still ends the sentence
        "EU NNP  B-NP\tB-ORG\n"  # CoNLL-2003 columns, spaces and tabs mixed
        "\t \n"
        "-DOCSTART- -X- O O\n",
        encoding="utf-8",
    )
    sentences = ner(conll)
    assert [s.tokens for s in sentences] == [["東京\u3000タワー", "New\u00a0York"], ["EU"]]
    assert [s.tags for s in sentences] == [["B-LOC", "I-LOC"], ["B-ORG"]]
    assert split_columns(" a\u3000b \t c ") == ["a\u3000b", "c"]


def test_bytes_that_are_not_utf8_name_file_line_and_column(tmp_path):
    tsv = tmp_path / "c.tsv"
    tsv.write_bytes(b"Hello\tHola\ncaf\xe9\tcaf\xc3\xa9\n")
    message = f"{tsv}:2: not valid UTF-8 (byte 0xe9 at column 4); convert the file to UTF-8"
    with pytest.raises(DataError) as caught:
        list(read_tsv(tsv, 0, 1))
    assert str(caught.value) == message
    (tmp_path / "t.en").write_text("a\nb\n")
    (tmp_path / "t.es").write_bytes("ñ\n\xff".encode() + b"\xfe\n")
    with pytest.raises(DataError, match=rf"t\.es:2: not valid UTF-8 \(byte 0xfe at column 2\)"):
        list(read_parallel(tmp_path / "t.en", tmp_path / "t.es"))
    conll = tmp_path / "n.conll"
    conll.write_bytes("EU\tB-ORG\n\nMünchen\tB-LOC\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"^{conll}:3: not valid UTF-8 \(byte 0xfc at column 2\); convert"):
        ner(conll)
    conll.write_bytes("EU\tB-ORG\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"n\.conll:1: not valid UTF-8 \(byte 0xff at column 1\) \(the file starts with a UTF-16"):
        ner(conll)


def test_a_truncated_corrupt_or_fake_gzip_file_is_named(tmp_path):
    text = "".join(f"sentence {i}\tfrase {i}\n" for i in range(5000)).encode()
    packed = gzip.compress(text)
    tsv, conll = tmp_path / "c.tsv.gz", tmp_path / "n.conll.gz"
    conll.write_bytes(gzip.compress(b"EU\tB-ORG\n"))
    assert ner(conll)[0].tokens == ["EU"]  # gzipped CoNLL files are read too
    for cut in (12, len(packed) // 2, len(packed) - 4):
        tsv.write_bytes(packed[:cut])
        with pytest.raises(DataError, match=rf"^{tsv}: ends early after line \d+: the file is truncated; copy"):
            list(read_tsv(tsv, 0, 1))
    conll.write_bytes(gzip.compress(b"EU\tB-ORG\n" * 100)[:-10])
    with pytest.raises(DataError, match=rf"^{conll}: ends early .*: the file is truncated"):
        ner(conll)
    flipped = bytearray(packed)
    flipped[-6] ^= 0xFF  # in the trailer's CRC: every line reads, then the check fails
    tsv.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=rf"^{tsv}: corrupt gzip data after line \d+ \("):
        list(read_tsv(tsv, 0, 1))
    for path in (tsv, conll):
        path.write_text("EU\tB-ORG\n")
        with pytest.raises(DataError, match=rf"^{path}: not a gzip file although named \.gz; compress it"):
            list(read_tsv(path, 0, 1)) if path == tsv else ner(path)
