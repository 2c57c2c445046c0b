"""Bad input and faults through the command line: one clear message and exit code 2, never a
traceback, and no state that blocks a later run."""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from seqkd.cli import main
from seqkd.engine import Engine
from seqkd.fileio import FolderLocked
from seqkd.recipe import load_recipe
from tests.conftest import REPO, tiny_recipe, write_recipe


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture
def recipe_file(tmp_path) -> Path:
    return write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "run"))


def test_a_binary_recipe(tmp_path, capsys):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert cli(capsys, "validate", str(path)) == (2, f"error: invalid recipe:\n  {path}:1: (top level): not a UTF-8 text file (byte 0x89 at offset 0); a recipe is YAML text\n")


def test_an_override_that_is_not_yaml_is_blamed_on_the_command_line(recipe_file, capsys):
    code, err = cli(capsys, "show", str(recipe_file), "training.lr=[1")
    assert code == 2 and "(command-line override)" in err and "the value is not valid YAML" in err


def test_a_key_given_twice(recipe_file, capsys):
    text = recipe_file.read_text()
    recipe_file.write_text(text + "description: again\n")
    code, err = cli(capsys, "validate", str(recipe_file))
    assert code == 2 and "key 'description' is given twice (first on line 1)" in err


def test_braces_in_output_dir(recipe_file, capsys):
    code, err = cli(capsys, "show", str(recipe_file), "output.dir=runs/{recipe.__class__}")
    assert code == 2 and "output.dir" in err and "the only placeholder is {recipe}" in err


def test_zero_warmup_with_inverse_sqrt(recipe_file, capsys):
    code, err = cli(capsys, "validate", str(recipe_file), "--set", "training.warmup_steps=0")
    assert code == 2 and "needs at least 1 warm-up step" in err
    assert cli(capsys, "validate", str(recipe_file), "--set", "training.warmup_steps=0", "--set", "training.schedule=constant")[0] == 0


def test_a_missing_teacher_checkpoint_fails_validation(tmp_path, capsys):
    r = tiny_recipe(tmp_path / "run", stages=[{"name": "kd", "method": "word_kd", "model": "student", "teacher_checkpoint": "nowhere.pt"}])
    code, err = cli(capsys, "validate", str(write_recipe(tmp_path / "r.yaml", r)))
    assert code == 2 and f"{tmp_path / 'nowhere.pt'}: no such model file" in err


def test_an_unknown_stage(recipe_file, capsys):
    code, err = cli(capsys, "run", str(recipe_file), "--stage", "nope")
    assert code == 2 and "no stage 'nope' (stages: teacher, word_kd, seq_kd)" in err


def test_a_plugin_clash_is_refused_at_validation(recipe_file, capsys, monkeypatch):
    import seqkd.recipe
    from seqkd.plugins import get_registry

    base = get_registry()
    clashed = dataclasses.replace(
        base, methods={k: v for k, v in base.methods.items() if k != "word_kd"},
        clashes={("method", "word_kd"): ["word_kd (seqkd 0.1.0)", "evil (seqkd-evil 1.0)"]},
    )
    monkeypatch.setattr(seqkd.recipe, "get_registry", lambda: clashed)
    code, err = cli(capsys, "validate", str(recipe_file))
    assert code == 2 and "method 'word_kd' is registered by two plugins: word_kd (seqkd 0.1.0) and evil (seqkd-evil 1.0)" in err


def small(tmp_path: Path) -> Path:
    r = tiny_recipe(tmp_path / "run", stages=[{"name": "student", "method": "supervised", "model": "student"}])
    r["task"]["data"]["max_train_pairs"] = 300
    r["training"].update(max_steps=10, validate_every=5, checkpoint_every=5, log_every=5, warmup_steps=5)
    r["evaluation"]["max_sentences"] = 5
    return write_recipe(tmp_path / "small.yaml", r)


def test_a_full_disk_at_a_stage_start_leaves_nothing_that_blocks_the_next_run(tmp_path, capsys, monkeypatch):
    path = small(tmp_path)
    Engine(load_recipe(path)).task()  # the vocabulary exists: the first write of the run is its stage.json
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, err = cli(capsys, "run", str(path))
    assert code == 2 and "no space left on device writing" in err and "stage.json" in err
    monkeypatch.setattr(os, "fsync", real)
    assert not (tmp_path / "run" / "student" / "stage.json").exists()
    assert cli(capsys, "run", str(path))[0] == 0


def test_damaged_files_of_a_finished_run(tmp_path, capsys):
    path = small(tmp_path)
    assert cli(capsys, "run", str(path))[0] == 0
    folder = tmp_path / "run" / "student"
    (folder / "report.json").write_text("")  # a report that cannot be read is redone
    assert cli(capsys, "run", str(path))[0] == 0 and (folder / "report.json").read_text().strip()
    source = tmp_path / "in.en"
    source.write_bytes(b"caf\xe9\n")
    code, err = cli(capsys, "translate", str(path), "--stage", "student", "--input", str(source))
    assert code == 2 and f"{source}:1: not valid UTF-8 (byte 0xe9 at column 4)" in err
    model = folder / "model.pt"
    data = torch.load(model, weights_only=True)
    data["model_config"]["encoder_dim"] = 64
    torch.save(data, tmp_path / "other.pt")
    os.replace(tmp_path / "other.pt", model)
    source.write_text("In the beginning\n")
    code, err = cli(capsys, "translate", str(path), "--stage", "student", "--input", str(source))
    assert code == 2 and "its model config and weights do not fit" in err
    (folder / "stage.json").write_text("{")
    code, err = cli(capsys, "run", str(path))
    assert code == 2 and "stage.json: the stage status is not valid JSON" in err and "--force" in err
    assert cli(capsys, "run", str(path), "--force")[0] == 0


def test_one_run_per_output_folder(tmp_path):
    path = small(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from seqkd.fileio import FolderLock; "
         "FolderLock(Path(sys.argv[1]), 'seqkd run other.yaml').acquire(); print('held', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLocked, match=rf"in use by another seqkd run \(pid {holder.pid} .*seqkd run other.yaml\)"):
            Engine(load_recipe(path)).run()
        assert not (out / "student").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    [report] = Engine(load_recipe(path)).run()  # the dead holder's lock is stale and taken over
    assert report.name == "student" and not (out / ".seqkd.lock").exists()
