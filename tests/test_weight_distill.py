"""Weight distillation: generator shapes, phase-1 gradients, exact conversion, validation, a real run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.conftest import tiny_recipe, write_recipe

TEACHER = {"encoder_layers": 6, "decoder_layers": 6, "encoder_dim": 64, "encoder_ffn_dim": 128, "encoder_heads": 4}
# the paper's students, at this teacher's width: TINY 6-1 with a half-width decoder, SMALL 6-2
TINY = {"encoder_layers": 6, "decoder_layers": 1, "encoder_dim": 64, "encoder_ffn_dim": 128, "decoder_dim": 32, "encoder_heads": 4}
SMALL = {"encoder_layers": 6, "decoder_layers": 2, "encoder_dim": 64, "encoder_ffn_dim": 128, "encoder_heads": 4}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    root = tmp_path_factory.mktemp("wd")
    recipe = tiny_recipe(root / "run", models={"teacher": TEACHER, "tiny": TINY, "small": SMALL})
    recipe["stages"] = [{"name": "teacher", "method": "supervised", "model": "teacher"}]
    engine = Engine(load_recipe(write_recipe(root / "r.yaml", recipe)))
    engine.task()
    return engine.task()


def build(task, config: dict):
    from seqkd.tasks.seq2seq.model import TransformerConfig

    return task.build_model(TransformerConfig.model_validate(config))


def method_for(task, student_config: dict, seed: int = 0):
    from seqkd.method import StageContext, Teacher
    from seqkd_plugins.weight_distill import WeightDistill

    torch.manual_seed(seed)
    teacher, student = build(task, TEACHER), build(task, student_config)
    with torch.no_grad():  # stands in for a trained teacher: no weight left at its init (biases 0)
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    options = WeightDistill.options_model(type(task)).model_validate({"data": "original"})
    method = WeightDistill(options, task, student, [Teacher.from_model(teacher)], 0.1)
    method.prepare(StageContext(cache_dir=None, max_tokens=512, device=torch.device("cpu"), rebuild=False, log=lambda _: None, write_text=None))
    return method


@pytest.mark.parametrize("config", [TINY, SMALL], ids=["tiny", "small"])
def test_generator_makes_every_student_weight_in_its_shape(task, config):
    method = method_for(task, config)
    generated = method.generator()
    assert {n: tuple(p.shape) for n, p in method.student.named_parameters()} == {n: tuple(t.shape) for n, t in generated.items()}
    # each student decoder layer reads a contiguous group of ts = 6 / L_s teacher layers
    group = 6 // config["decoder_layers"]
    stack = getattr(method.generator, "teacher__decoder__ffn__inner_proj__weight")
    assert stack.shape[:2] == (config["decoder_layers"], group)
    transform = method.generator.transforms["decoder__ffn__inner_proj__weight"]
    assert (transform.w_layer is None) == (group == 1)
    if group > 1:
        assert torch.allclose(transform.w.detach(), torch.full((group,), 1 / group))
    # matching shapes (encoder, ts = 1) reduce to S = A * tanh(T) + B, which is tanh(T) at init
    teacher_q = dict(method.teacher.named_parameters())["encoder.layers.3.self_attn.q_proj.weight"]
    assert torch.equal(generated["encoder.layers.3.self_attn.q_proj.weight"], torch.tanh(teacher_q))


def test_phase_one_trains_only_the_generator(task):
    method = method_for(task, TINY)
    batch = next(iter(method.train_reader(512, seed=0)))
    method.loss(batch, 0).loss.backward()
    trained = dict(method.modules.named_parameters())
    assert trained and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.values())
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is None for p in method.student.parameters())
    assert not any(p.requires_grad for p in method.teacher.parameters())


@pytest.mark.parametrize("config", [TINY, SMALL], ids=["tiny", "small-tied-embeddings"])
def test_converted_checkpoint_reproduces_the_generator_backed_student(task, tmp_path, config):
    from seqkd.checkpoint import save_model
    from seqkd.engine import load_trained_model

    method = method_for(task, config)
    names = [n for n, _ in method.student.named_parameters()]
    with torch.no_grad():  # move away from the init so the check is not trivially tanh(teacher)
        for p in method.generator.parameters():
            p.add_(0.01 * torch.randn_like(p))
    method.student.eval()
    batch = task.valid_batches(512)[0]
    with torch.no_grad():
        backed = method.student_forward(batch).logits
    assert [n for n, _ in method.student.named_parameters()] == names  # tied weights stay tied
    path = tmp_path / "model.pt"
    save_model(path, task=task.name, model_config=config, vocabulary=task.vocabulary_id(), state_dict=method.student_state_dict())
    converted = load_trained_model(task, path)[0].eval()
    with torch.no_grad():
        assert torch.equal(task.forward(converted, batch).logits, backed)


@pytest.mark.parametrize(
    ("decoder_layers", "message"),
    [(4, r"the teacher's 6 decoder layers do not split into 4 equal contiguous groups .*use 1, 2, 3, 6 layers"),
     (8, r"the student's decoder has 8 layers, the teacher's 6")],
)
def test_unmappable_depth_is_refused_at_validate_time(tmp_path, decoder_layers, message):
    from seqkd.recipe import RecipeError, load_recipe

    recipe = tiny_recipe(tmp_path / "run", models={"teacher": TEACHER, "student": {**SMALL, "decoder_layers": decoder_layers}})
    recipe["stages"] = [
        {"name": "teacher", "method": "supervised", "model": "teacher"},
        {"name": "wd", "method": "weight_distill", "model": "student", "teacher": "teacher"},
    ]
    with pytest.raises(RecipeError, match=r"stages\[1\]\.model.*method 'weight_distill' cannot distil 'teacher' into 'student': " + message):
        load_recipe(write_recipe(tmp_path / "r.yaml", recipe))


def test_init_must_name_an_earlier_stage_of_the_same_model(tmp_path):
    from seqkd.recipe import RecipeError, load_recipe

    recipe = tiny_recipe(tmp_path / "run")
    recipe["stages"] = [
        {"name": "teacher", "method": "supervised", "model": "teacher"},
        {"name": "student", "method": "supervised", "model": "student", "init": "teacher"},
        {"name": "again", "method": "supervised", "model": "student", "init": "later"},
    ]
    with pytest.raises(RecipeError) as info:
        load_recipe(write_recipe(tmp_path / "r.yaml", recipe))
    text = str(info.value)
    assert "stage 'teacher' trains model 'teacher', whose config differs from 'student'" in text
    assert "unknown earlier stage 'later'" in text


def test_a_student_starts_from_chosen_teacher_layers(task):
    """The copied-layers control of the WD benchmark: encoder layers, then decoder layers."""
    from seqkd.errors import DataError

    torch.manual_seed(0)
    teacher, student = build(task, TEACHER), build(task, SMALL)
    task.init_from_layers(student, teacher, [0, 1, 2, 3, 4, 5, 0, 5])
    for stack, pairs in (("encoder", [(i, i) for i in range(6)]), ("decoder", [(0, 0), (1, 5)])):
        for i, j in pairs:
            mine, theirs = getattr(student, stack).layers[i].state_dict(), getattr(teacher, stack).layers[j].state_dict()
            assert all(torch.equal(mine[k], theirs[k]) for k in theirs), (stack, i, j)
    assert not torch.equal(student.decoder.layers[1].ffn.inner_proj.weight, teacher.decoder.layers[1].ffn.inner_proj.weight)
    assert torch.equal(student.final_proj.weight, teacher.final_proj.weight)
    assert torch.equal(student.decoder.layer_norm.weight, teacher.decoder.layer_norm.weight)
    with pytest.raises(DataError, match=r"the student has 6 encoder and 2 decoder layers; give 8 teacher layers, the encoder's first"):
        task.init_from_layers(student, teacher, [0, 5])
    with pytest.raises(DataError, match=r"the teacher has 6 decoder layers \(0\.\.5\), not 6"):
        task.init_from_layers(student, teacher, [0, 1, 2, 3, 4, 5, 0, 6])
    with pytest.raises(DataError, match=r"init needs equal widths"):
        task.init_from_layers(build(task, {**SMALL, "decoder_ffn_dim": 64}), teacher, [0, 1, 2, 3, 4, 5, 0, 5])


@pytest.mark.parametrize(("student", "layers", "message"), [
    (SMALL, [0, 1, 2, 3, 4, 5, 5], r"the student has 6 encoder and 2 decoder layers; give 8 teacher layers"),
    (TINY, [0, 1, 2, 3, 4, 5, 5], r"the student's sizes must be the teacher's: dec_dim 32 vs 64, dec_ffn_dim 64 vs 128"),
])
def test_init_layers_that_cannot_fit_are_refused_before_any_training(tmp_path, student, layers, message):
    from seqkd.recipe import RecipeError, load_recipe

    recipe = tiny_recipe(tmp_path / "run", models={"teacher": TEACHER, "student": student})
    recipe["stages"] = [
        {"name": "teacher", "method": "supervised", "model": "teacher"},
        {"name": "copied", "method": "seq_kd", "model": "student", "teacher": "teacher", "init": "teacher", "init_layers": layers},
    ]
    with pytest.raises(RecipeError, match=r"stages\[1\]\.init_layers.*" + message):
        load_recipe(write_recipe(tmp_path / "r.yaml", recipe))


def test_wd_run_beats_an_untrained_student_and_reuses_the_seq_kd_cache(trained_run, tmp_path):
    """Both phases on the shared tiny run: phase 1 reads the teacher outputs seq_kd already cached;
    phase 2 fine-tunes the converted student."""
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    path, shared_reports = trained_run
    raw = yaml.safe_load(path.read_text())
    seq_kd = next(s for s in raw["stages"] if s["name"] == "seq_kd")
    raw["stages"] += [
        {"name": "wd", "method": "weight_distill", "model": "student", "teacher": "teacher",
         "training": {"max_steps": 100}, "options": seq_kd["options"]},
        # phase 2 on the references: this tiny teacher's beam outputs are too poor to judge by
        {"name": "wd_finetune", "method": "supervised", "model": "student", "init": "wd", "training": {"max_steps": 100}},
    ]
    recipe = load_recipe(write_recipe(path.with_name("wd.yaml"), raw))
    reports = {r.name: r for r in Engine(recipe).run(only=["wd", "wd_finetune"])}
    assert not (recipe.output_dir / "_cache" / "wd" / "nbest").exists()  # seq_kd's cache was reused

    engine = Engine(recipe)
    engine.task()
    torch.manual_seed(0)
    untrained = engine.task().build_model(recipe.models["student"]).eval()
    with torch.no_grad():
        sums = [engine.task().nll(engine.task().forward(untrained, b), 0.0) for b in engine.task().valid_batches(4096)]
    untrained_nll = sum(loss.item() for loss, _ in sums) / sum(n for _, n in sums)
    metrics = [json.loads(line) for line in (recipe.output_dir / "wd" / "metrics.jsonl").read_text().splitlines()]
    phase_one_nll = [m["best_nll"] for m in metrics if m["kind"] == "valid"][-1]
    assert phase_one_nll < untrained_nll - 0.3  # the generated student predicts the references
    scores = engine.score_model(engine.task(), untrained, recipe.only_task().evaluation)[0]
    assert reports["wd_finetune"].metrics["chrf"] > scores["chrf"] + 2
    teacher = next(r for r in shared_reports if r.name == "teacher")
    assert reports["wd"].parameters == reports["wd_finetune"].parameters < teacher.parameters
