"""The plugin contract's shapes, each run end to end on the shipped Bible data by a test-only
method (tests/contract_methods.py): several teachers, several tasks where one task's stage outputs
are another's input view, per-role views, method-owned modules; plus engine behaviour around them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from seqkd.checkpoint import safe_load
from seqkd.engine import Engine, StageConflict
from seqkd.recipe import RecipeError, load_recipe
from seqkd.trainer import Trainer
from tests import contract_methods
from tests.conftest import kill_and_resume, tiny_recipe, write_recipe

SMALL_TEACHER = {"encoder_layers": 1, "decoder_layers": 1, "encoder_dim": 64, "encoder_ffn_dim": 128, "encoder_heads": 4}


def metrics(stage_dir: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (stage_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def load(path: Path, overrides: list[str] = ()):
    return load_recipe(path, list(overrides), registry=contract_methods.registry())


def teacher_file(trained_run) -> Path:
    return load_recipe(trained_run[0]).output_dir / "teacher" / "model.pt"


def test_a_method_with_two_teachers_of_different_sizes(trained_run, tmp_path):
    run_dir = load_recipe(trained_run[0]).output_dir  # shares the trained teacher and the vocabulary
    r = tiny_recipe(run_dir)
    r["models"]["small_teacher"] = SMALL_TEACHER
    r["stages"] = [
        r["stages"][0],
        {"name": "teacher_small", "method": "supervised", "model": "small_teacher", "training": {"max_steps": 100}, "evaluate": False},
        {"name": "two_teachers", "method": "two_teachers", "model": "student", "teachers": ["teacher", "teacher_small"],
         "training": {"max_steps": 80, "validate_every": 40, "log_every": 20}, "evaluate": False},
    ]
    path = write_recipe(tmp_path / "two.yaml", r)
    reports = {x.name: x for x in Engine(load(path)).run()}
    assert reports["teacher"].reused and not reports["two_teachers"].reused
    folder = run_dir / "two_teachers"
    train = metrics(folder, "train")
    assert {"kd_0", "kd_1"} <= set(train[-1]) and train[-1]["kd_0"] != train[-1]["kd_1"]
    vocab = safe_load(folder / "model.pt")["state_dict"]["final_proj.weight"].shape[0]
    assert metrics(folder, "valid")[-1]["nll"] < 0.8 * math.log(vocab)  # learned from both
    # every teacher is in the stage's key: retraining the second teacher changes the student's hash
    stage = load(path).stage("two_teachers")
    changed = load(path, ["stages.teacher_small.training.lr=0.001"])
    assert Engine(load(path)).stage_hash(stage) != Engine(changed).stage_hash(changed.stage("two_teachers"))
    r["stages"][2]["teachers"] = ["teacher"]
    with pytest.raises(RecipeError, match="method 'two_teachers' needs at least 2 teachers"):
        load(write_recipe(tmp_path / "one.yaml", r))


def two_task_recipe(trained_run, tmp_path: Path) -> Path:
    """Task `copy` (a tiny en->en model, its decoded outputs a noisy `draft` of each English
    source, as an ASR system's transcripts would be) feeds task `mt` (en->es), whose student reads
    the drafts while its teacher reads the real sources."""
    tiny = tiny_recipe(load_recipe(trained_run[0]).output_dir)
    copy_task = {**tiny["task"], "target_lang": "en", "data": {**tiny["task"]["data"], "target_column": 1},
                 "evaluation": {"beam_size": 1, "batch_size": 128, "split": "valid"}}
    recipe = {
        "description": "two tasks: a stage's outputs become another task's input view",
        "tasks": {"copy": copy_task, "mt": {**tiny["task"], "reads": {"draft": "copier"}, "evaluation": tiny["evaluation"]}},
        "models": {"copier": SMALL_TEACHER, "student": tiny["models"]["student"]},
        "training": tiny["training"],
        "output": tiny["output"],
        "stages": [
            {"name": "copier", "task": "copy", "method": "supervised", "model": "copier", "training": {"max_steps": 60},
             "outputs": ["train", "valid", "test"], "evaluate": False},
            {"name": "cascade", "task": "mt", "method": "two_views", "model": "student",
             "teachers": [{"checkpoint": str(teacher_file(trained_run))}], "training": {"max_steps": 60},
             "evaluation": {"view": "draft"}},
        ],
    }
    return write_recipe(tmp_path / "cascade.yaml", recipe)


def test_a_stage_of_one_task_makes_the_input_view_another_task_reads(trained_run, tmp_path):
    path = two_task_recipe(trained_run, tmp_path)
    recipe = load(path)
    engine = Engine(recipe)
    reports = {x.name: x for x in engine.run()}
    mt = engine.task("mt")
    outputs = recipe.output_dir / "copier" / "outputs"
    for split in ("train", "valid", "test"):
        assert len((outputs / f"{split}.txt").read_text().splitlines()) == len(mt.pairs()[split])
    batch = next(iter(mt.train_reader(512, seed=0)))
    draft, _ = batch.views["draft"]
    assert draft.shape[0] == batch.source.shape[0] and not torch.equal(draft, batch.source)
    assert reports["cascade"].metrics["sentences"] == 150 and reports["cascade"].task == "mt"
    assert (recipe.output_dir / "cascade" / "predictions.valid.txt").exists()
    # the downstream stage's key covers the upstream stage
    changed = load(path, ["stages.copier.training.max_steps=50"])
    assert Engine(changed).stage_hash(changed.stage("cascade")) != engine.stage_hash(recipe.stage("cascade"))
    assert all(x.reused for x in Engine(load(path)).run())


def test_two_task_recipes_are_checked(trained_run, tmp_path):
    import yaml

    raw = yaml.safe_load(two_task_recipe(trained_run, tmp_path).read_text())
    del raw["stages"][1]["task"]
    with pytest.raises(RecipeError, match=r"stages\[1\]: the recipe has several tasks: set `task:` \(valid choices: copy, mt\)"):
        load(write_recipe(tmp_path / "a.yaml", raw))
    raw["stages"][1]["task"] = "mt"
    raw["stages"][0]["outputs"] = []
    with pytest.raises(RecipeError, match="stage 'copier' writes no outputs"):
        load(write_recipe(tmp_path / "b.yaml", raw))
    raw["stages"].reverse()
    with pytest.raises(RecipeError, match="stage 'copier' runs after this task's first stage 'cascade'"):
        load(write_recipe(tmp_path / "c.yaml", raw))


@pytest.mark.parametrize("method", ["projected_hidden", "word_kd"])
def test_a_killed_run_resumes_bit_identically(trained_run, tmp_path, monkeypatch, method):
    """``projected_hidden`` owns a trainable module and state; ``word_kd`` loads its teacher at the
    first step, which must not move the random stream that the student's dropout draws from."""
    from seqkd_plugins.word_kd import WordKD

    def recipe_at(out: Path) -> Path:
        r = tiny_recipe(out, stages=[{"name": "student", "method": method, "model": "student",
                                      "teacher_checkpoint": str(teacher_file(trained_run))}])
        r["training"].update(max_steps=40, checkpoint_every=20, validate_every=20, log_every=20)
        r["evaluation"]["max_sentences"] = 20
        return write_recipe(tmp_path / f"{out.name}.yaml", r)

    Engine(load(recipe_at(tmp_path / "straight"))).run()
    cls = contract_methods.ProjectedHidden if method == "projected_hidden" else WordKD
    kill_and_resume(cls, 27, lambda: Engine(load(recipe_at(tmp_path / "resumed"))).run(), monkeypatch)  # checkpoint: step 20

    a, b = (safe_load(tmp_path / run / "student" / "checkpoints" / "last.pt") for run in ("straight", "resumed"))
    assert all(torch.equal(a["student"][k], b["student"][k]) for k in a["student"])
    if method == "projected_hidden":
        assert a["method_state"] == b["method_state"] == {"calls": 40}
        assert set(a["method_modules"]) == {"proj.weight", "proj.bias"}
        assert all(torch.equal(a["method_modules"][k], b["method_modules"][k]) for k in a["method_modules"])
    model = safe_load(tmp_path / "resumed" / "student" / "model.pt")["state_dict"]
    assert set(model) == set(a["student"])  # the method's module is not part of the student's model file


def test_an_untrained_teacher_is_refused_before_the_stage_folder_is_claimed(tmp_path):
    r = tiny_recipe(tmp_path / "run")
    path = write_recipe(tmp_path / "r.yaml", r)
    with pytest.raises(StageConflict, match=r"stage 'word_kd': its teacher .*teacher/model.pt is not trained yet; run stage 'teacher' first"):
        Engine(load_recipe(path)).run(only=["word_kd"])
    assert not (tmp_path / "run" / "word_kd").exists()
    with pytest.raises(StageConflict, match=r"no stage 'nope' \(stages: teacher, word_kd, seq_kd\)"):
        Engine(load_recipe(path)).run(only=["nope"])


def test_changed_evaluation_reruns_evaluation_only(trained_run):
    path, reports = trained_run
    model = load_recipe(path).output_dir / "word_kd" / "model.pt"
    before = model.stat().st_mtime_ns
    again = {x.name: x for x in Engine(load_recipe(path, ["evaluation.max_sentences=40"])).run(only=["word_kd"])}
    assert again["word_kd"].reused and again["word_kd"].metrics["sentences"] == 40
    assert model.stat().st_mtime_ns == before
    restored = {x.name: x for x in Engine(load_recipe(path)).run(only=["word_kd"])}  # for the tests that read it
    assert restored["word_kd"].metrics["sentences"] == 150


def small_run(tmp_path: Path, **training) -> Path:
    r = tiny_recipe(tmp_path / "run", stages=[{"name": "student", "method": "supervised", "model": "student"}])
    r["task"]["data"]["max_train_pairs"] = 300
    r["training"].update(max_steps=20, validate_every=5, checkpoint_every=5, log_every=5, warmup_steps=5, **training)
    r["evaluation"]["max_sentences"] = 10
    return write_recipe(tmp_path / "small.yaml", r)


def test_force_replaces_a_stage_of_another_configuration(tmp_path):
    path = small_run(tmp_path)
    Engine(load_recipe(path)).run()
    changed = load_recipe(path, ["training.lr=0.001"])
    with pytest.raises(StageConflict, match="different configuration"):
        Engine(changed).run()
    [report] = Engine(changed, force=True).run()
    assert not report.reused
    status = json.loads((tmp_path / "run" / "student" / "stage.json").read_text())
    assert status["status"] == "done" and status["hash"] == Engine(changed).stage_hash(changed.stage("student"))
    assert [m["step"] for m in metrics(tmp_path / "run" / "student", "train")] == [5, 10, 15, 20]


def test_early_stopping_after_patience_validations_without_improvement(tmp_path, monkeypatch):
    losses = iter([3.0, 2.0, 2.5, 2.6, 1.0, 1.0])
    monkeypatch.setattr(Trainer, "validate", lambda self, batches: next(losses))
    Engine(load_recipe(small_run(tmp_path, patience=2))).run()
    valid = metrics(tmp_path / "run" / "student", "valid")
    assert [m["step"] for m in valid] == [5, 10, 15, 20][:4] and valid[-1]["best_nll"] == 2.0
    assert safe_load(tmp_path / "run" / "student" / "checkpoints" / "last.pt")["step"] == 20


def test_optimizers_and_schedules(tmp_path):
    from seqkd.trainer import build_optimizer, build_scheduler
    from seqkd.training_config import TrainingConfig

    params = [torch.nn.Parameter(torch.zeros(2))]
    lrs = {}
    for schedule in ("inverse_sqrt", "linear", "cosine", "constant"):
        config = TrainingConfig(max_steps=100, warmup_steps=10, lr=1.0, schedule=schedule, optimizer="adam")
        optimizer = build_optimizer(params, config)
        assert type(optimizer) is torch.optim.Adam and optimizer.defaults["betas"] == (0.9, 0.98)
        scheduler = build_scheduler(optimizer, config)
        seen = []
        for _ in range(100):
            optimizer.step()
            scheduler.step()
            seen.append(scheduler.get_last_lr()[0])
        lrs[schedule] = seen
    for seen in lrs.values():
        assert seen[9] == pytest.approx(1.0)  # the peak after the warm-up
    assert lrs["constant"][-1] == pytest.approx(1.0)
    for decaying in ("linear", "cosine"):  # the last update runs at the rate set after the one before
        seen = lrs[decaying][9:-1]
        assert all(x > y for x, y in zip(seen, seen[1:])) and seen[-1] < 0.02, decaying
    assert lrs["inverse_sqrt"][-1] == pytest.approx(math.sqrt(10 / 100))
    with pytest.raises(ValueError, match="inverse_sqrt schedule needs at least 1 warm-up step"):
        TrainingConfig(warmup_steps=0)
    TrainingConfig(warmup_steps=0, schedule="constant")


def test_perturb_is_reproducible_from_the_generator(trained_run):
    from seqkd.tasks.seq2seq.config import Seq2SeqNoise
    from seqkd.tasks.seq2seq.vocab import EOS

    engine = Engine(load_recipe(trained_run[0]))
    task = engine.task()
    batch = task.indexed_batches("train", 0, 16, 4096)[0]
    noise = Seq2SeqNoise(word_drop=0.2, word_replace=0.2, replace_with="random", word_shuffle=3)
    a = task.perturb(batch, noise, torch.Generator().manual_seed(7))
    b = task.perturb(batch, noise, torch.Generator().manual_seed(7))
    c = task.perturb(batch, noise, torch.Generator().manual_seed(8))
    assert torch.equal(a.source, b.source) and not torch.equal(a.source, c.source)
    assert not torch.equal(a.source[:, : batch.source.shape[1]], batch.source[:, : a.source.shape[1]])
    assert all(a.source[i, n - 1].item() == EOS and 1 < n <= batch.source_lens[i] for i, n in enumerate(a.source_lens))
    assert torch.equal(a.target_out, batch.target_out)  # only the inputs change


def test_the_corpus_is_hashed_once_per_run(tmp_path, monkeypatch):
    import seqkd.tasks.seq2seq.adapter as adapter

    real, calls = adapter.file_sha256, []
    monkeypatch.setattr(adapter, "file_sha256", lambda path: calls.append(path) or real(path))
    path = small_run(tmp_path)
    Engine(load_recipe(path)).run()
    assert len(calls) == 1  # one corpus file, however many times the stage's hash and caches ask
