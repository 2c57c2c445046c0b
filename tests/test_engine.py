"""End to end on real data: the student learns; runs resume, reuse, refuse and stop cleanly."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from seqkd.checkpoint import CheckpointError, safe_load
from seqkd.engine import Engine, StageConflict
from seqkd.recipe import load_recipe
from seqkd.trainer import TrainingError
from seqkd_plugins.supervised import Supervised
from tests.conftest import kill_and_resume, tiny_recipe, write_recipe


def metrics(stage_dir: Path, kind: str) -> list[dict]:
    lines = (stage_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_student_learns_and_beats_an_untrained_model(trained_run):
    path, reports = trained_run
    recipe = load_recipe(path)
    engine = Engine(recipe)
    engine.task()
    untrained = engine.task().build_model(recipe.models["student"])
    torch.manual_seed(0)
    baseline = engine.score_model(engine.task(), untrained, recipe.only_task().evaluation)[0]
    for name in ("word_kd", "seq_kd"):
        student = {r.name: r for r in reports}[name].metrics
        assert student["bleu"] > baseline["bleu"], name
        assert student["chrf"] > baseline["chrf"], name
    distilled = (recipe.output_dir / "_cache" / "seq_kd" / "distilled.train.txt").read_text().splitlines()
    assert len(distilled) > 0.9 * engine.task().num_examples("train") and all(line.strip() for line in distilled)
    train = metrics(recipe.output_dir / "teacher", "train")
    assert train[-1]["loss"] < 0.7 * train[0]["loss"]
    untrained_nll = torch.log(torch.tensor(float(engine.task().vocab_size))).item()  # about uniform
    assert metrics(recipe.output_dir / "word_kd", "valid")[-1]["nll"] < 0.75 * untrained_nll
    folder = recipe.output_dir / "word_kd"
    for name in ("stage.json", "config.yaml", "model.pt", "report.json", "metrics.jsonl", "checkpoints/last.pt"):
        assert (folder / name).exists(), name
    assert list((folder / "tensorboard").iterdir())
    assert (folder / "predictions.valid.txt").read_text().count("\n") == 150
    assert "nrefs:1|case:mixed" in student["bleu_signature"]


def test_finished_stages_are_reused(trained_run):
    path, _ = trained_run
    reports = Engine(load_recipe(path)).run()
    assert all(r.reused for r in reports)


def test_folder_of_a_different_config_is_not_overwritten_without_force(trained_run):
    path, _ = trained_run
    recipe = load_recipe(path, ["training.lr=0.001"])
    with pytest.raises(StageConflict, match="holds stage 'teacher' of a different configuration"):
        Engine(recipe).run()


def test_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    def recipe_at(out: Path) -> Path:
        r = tiny_recipe(out, stages=[{"name": "student", "method": "supervised", "model": "student"}])
        r["task"]["data"]["max_train_pairs"] = 600  # several epochs inside 60 steps
        r["training"].update(max_steps=60, checkpoint_every=20, validate_every=30, log_every=20)
        return write_recipe(tmp_path / f"{out.name}.yaml", r)

    straight = recipe_at(tmp_path / "straight")
    Engine(load_recipe(straight)).run()

    resumed = recipe_at(tmp_path / "resumed")

    def last_checkpoint_is_step_20() -> None:
        assert safe_load(tmp_path / "resumed" / "student" / "checkpoints" / "last.pt")["step"] == 20

    # killed in step 31: the last checkpoint is step 20
    kill_and_resume(Supervised, 31, lambda: Engine(load_recipe(resumed)).run(), monkeypatch, last_checkpoint_is_step_20)

    a, b = tmp_path / "straight" / "student", tmp_path / "resumed" / "student"
    ma, mb = metrics(a, "train"), metrics(b, "train")
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == [20, 40, 60]
    assert mb[-1]["loss"] == pytest.approx(ma[-1]["loss"], rel=1e-5)
    wa = safe_load(a / "model.pt")["state_dict"]
    wb = safe_load(b / "model.pt")["state_dict"]
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    r = tiny_recipe(tmp_path / "run", stages=[{"name": "student", "method": "supervised", "model": "student"}])
    r["training"].update(max_steps=30, checkpoint_every=10)
    path = write_recipe(tmp_path / "nan.yaml", r)
    calls = {"n": 0}
    original = Supervised.loss

    def nan_loss(self, batch, step):
        calls["n"] += 1
        out = original(self, batch, step)
        if calls["n"] == 15:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Supervised, "loss", nan_loss)
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at step 15; .* last good checkpoint is kept"):
        Engine(load_recipe(path)).run()
    state = safe_load(tmp_path / "run" / "student" / "checkpoints" / "last.pt")
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["student"].values())


def test_teacher_with_another_vocabulary_is_refused_before_training(trained_run, tmp_path):
    path, _ = trained_run
    teacher_file = load_recipe(path).output_dir / "teacher" / "model.pt"
    r = tiny_recipe(tmp_path / "run", stages=[{
        "name": "kd", "method": "word_kd", "model": "student", "teacher_checkpoint": str(teacher_file),
    }])
    r["task"]["vocab_size"] = 800
    with pytest.raises(CheckpointError, match="vocabulary .* differs from this recipe's"):
        Engine(load_recipe(write_recipe(tmp_path / "v.yaml", r))).run()
    assert not (tmp_path / "run" / "kd" / "checkpoints").exists()


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoints_load_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        safe_load(path)
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError):
        safe_load(path)


def test_translate_command_translates_a_file(trained_run, tmp_path, capsys):
    from seqkd.cli import main

    path, _ = trained_run
    source = tmp_path / "in.en"
    source.write_text("In the beginning, God created the heavens and the earth.\nGod said, “Let there be light.”\n")
    assert main(["translate", str(path), "--stage", "word_kd", "--input", str(source), "--beam", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.strip() for line in lines)


def test_translate_refuses_an_untrained_stage(trained_run, tmp_path, capsys):
    from seqkd.cli import main

    path, _ = trained_run
    assert main(["translate", str(path), "--stage", "nope", "--input", str(path)]) == 2
    assert "no stage 'nope' (stages: teacher, word_kd, seq_kd)" in capsys.readouterr().err
