"""Reusing a trained teacher from a recipe elsewhere: keys from file contents, refusals that name
the part that differs, a dry run, and per-stage retraining."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from seqkd.cli import main
from seqkd.engine import Engine, StageConflict
from seqkd.recipe import load_recipe
from tests.conftest import CORPUS, tiny_recipe, write_recipe


def teacher_only(trained_run, folder: Path, corpus: str) -> Path:
    """The tiny recipe's teacher stage, written in another folder with the corpus named ``corpus``."""
    r = tiny_recipe(load_recipe(trained_run[0]).output_dir)
    r["task"]["data"]["corpus"] = corpus
    r["stages"] = r["stages"][:1]
    folder.mkdir(parents=True, exist_ok=True)
    return write_recipe(folder / "mine.yaml", r)


def test_a_teacher_is_reused_from_another_folder_naming_the_corpus_another_way(trained_run, tmp_path):
    path = teacher_only(trained_run, tmp_path / "elsewhere", os.path.relpath(CORPUS, tmp_path / "elsewhere"))
    assert [(p.stage, p.action) for p in Engine(load_recipe(path)).plan()] == [("teacher", "reuse")]
    [report] = Engine(load_recipe(path)).run()
    assert report.reused


def test_changed_data_is_refused_naming_the_part_before_anything_is_built(trained_run, tmp_path):
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]  # one pair fewer: another corpus
    changed = tmp_path / "changed.tsv.gz"
    with gzip.open(changed, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    path = teacher_only(trained_run, tmp_path, str(changed))
    shared = load_recipe(path).output_dir / "_shared"
    before = sorted(shared.iterdir())
    [plan] = Engine(load_recipe(path)).plan()
    assert plan.action == "refuse" and "data: " in plan.reason and "teacher_checkpoint: " in plan.reason
    with pytest.raises(StageConflict, match=r"different configuration .*data: \"\w+\" in the folder, \"\w+\" here"):
        Engine(load_recipe(path)).run()
    assert sorted(shared.iterdir()) == before  # no vocabulary was trained for the refused stage


def test_dry_run_reports_each_stage_and_trains_nothing(trained_run, tmp_path, capsys):
    path, _ = trained_run
    r = tiny_recipe(load_recipe(path).output_dir)
    r["stages"].append({"name": "another", "method": "word_kd", "model": "student", "teacher": "teacher",
                        "options": {"alpha": 0.9}})
    mine = write_recipe(tmp_path / "more.yaml", r)
    assert main(["run", str(mine), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["teacher", "reuse"], ["word_kd", "reuse"], ["seq_kd", "reuse"], ["another", "train"]]
    assert not (load_recipe(mine).output_dir / "another").exists()
    assert main(["run", str(mine), "--dry-run", "--force-stage", "word_kd"]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == ["reuse", "retrain", "reuse", "train"]


def test_a_new_method_version_is_retrained_not_reused(trained_run):
    recipe = load_recipe(trained_run[0])
    stage = recipe.stage("word_kd")
    assert stage.method_origin.startswith("seqkd ")
    stage.method_origin = "seqkd 9.9"
    plan = Engine(recipe).plan_stage(stage)
    assert plan.action == "refuse" and f'code.method: "seqkd {__import__("seqkd").__version__}" in the folder, "seqkd 9.9" here' in plan.reason


def test_a_model_no_stage_trains_is_warned_about(tmp_path, capsys):
    r = tiny_recipe(tmp_path / "run")
    r["models"]["spare"] = r["models"]["student"]
    path = write_recipe(tmp_path / "spare.yaml", r)
    assert main(["validate", str(path)]) == 0
    assert "warning: " in capsys.readouterr().err
    [warning] = load_recipe(path).warnings
    assert warning.endswith("models.spare: no stage trains this model") and f"{path}:" in warning
