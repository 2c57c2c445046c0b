"""The ASR -> MT cascade end to end on a tiny synthesised corpus: an ASR stage that learns, its
transcripts as the MT task's `asr` view, and cascade_kd's teacher and student reading different
inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqkd.engine import Engine, load_trained_model
from seqkd.recipe import load_recipe
from seqkd.tasks.asr.adapter import ASROutput
from seqkd.tasks.seq2seq.adapter import Seq2SeqTask
from tests.conftest import write_recipe

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "debian-descriptions" / "classification.jsonl.gz"


def cascade_recipe(folder: Path, **asr_training) -> Path:
    recipe = {
        "description": "tiny cascade",
        "tasks": {
            "asr": {"name": "asr", "vocab_size": 200, "max_seconds": 12, "max_target_len": 48, "min_train_pairs": 20,
                    "data": {"manifest": "speech/manifest.tsv",
                             "synthesize": {"corpus": str(CORPUS), "max_train": 40, "max_valid": 8, "max_test": 8}},
                    "evaluation": {"split": "valid", "beam_size": 1}},
            "mt": {"name": "translation", "source_lang": "en", "target_lang": "it", "vocab_size": 300, "max_seq_len": 48,
                   "min_train_pairs": 20, "reads": {"asr": "asr"},
                   "data": {"train": "speech/train.tsv", "valid": "speech/valid.tsv", "test": "speech/test.tsv",
                            "source_column": 0, "target_column": 1},
                   "evaluation": {"split": "test", "view": "asr", "beam_size": 1}},
        },
        "models": {
            "asr": {"dim": 64, "encoder_layers": 1, "decoder_layers": 1, "heads": 4, "ffn_dim": 128, "subsampler_channels": 64, "dropout": 0.0},
            "mt": {"encoder_layers": 1, "decoder_layers": 1, "encoder_dim": 32, "encoder_ffn_dim": 64, "encoder_heads": 4},
        },
        "training": {"max_steps": 20, "max_tokens": 512, "lr": 0.003, "warmup_steps": 5, "label_smoothing": 0.0,
                     "log_every": 100, "validate_every": 100, "checkpoint_every": 100},
        "output": {"dir": str(folder / "run")},
        "stages": [
            {"name": "asr", "task": "asr", "method": "supervised", "model": "asr", "outputs": ["train", "valid", "test"],
             "training": {"max_steps": 150, "max_tokens": 7000, "lr": 0.003, "warmup_steps": 15, **asr_training}},
            {"name": "mt_gold", "task": "mt", "method": "supervised", "model": "mt"},
            {"name": "cascade_kd", "task": "mt", "method": "cascade_kd", "model": "mt", "teacher": "mt_gold"},
        ],
    }
    return write_recipe(folder / "cascade.yaml", recipe)


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cascade")
    path = cascade_recipe(folder)
    reports = {r.name: r for r in Engine(load_recipe(path)).run()}
    return path, reports


def test_the_asr_stage_learns_its_utterances(cascade):
    path, reports = cascade
    recipe = load_recipe(path)
    engine = Engine(recipe)
    asr = engine.task("asr")
    options = recipe.tasks["asr"].evaluation.model_copy(update={"split": "valid"})
    inputs = asr.eval_inputs("train", options)
    trained, _ = load_trained_model(asr, engine.stage_dir("asr") / "model.pt")
    torch.manual_seed(0)
    untrained = asr.build_model(recipe.models["asr"])
    wer = {name: asr.score("train", asr.predict(model, inputs, options), options)["wer"] for name, model in [("trained", trained), ("untrained", untrained)]}
    assert wer["trained"] < 70 and wer["untrained"] > wer["trained"] + 30, wer


def test_the_asr_loss_mixes_attention_and_ctc_and_ctc_learns(cascade):
    path, _ = cascade
    recipe = load_recipe(path, ["tasks.asr.ctc_weight=0.3"])
    asr = Engine(recipe).task("asr")
    torch.manual_seed(0)
    model = asr.build_model(recipe.models["asr"])
    batch = next(iter(asr.train_reader(3000, seed=0)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    ctc = []
    for step in range(25):
        output = asr.forward(model, batch)
        attention, n = Seq2SeqTask.nll(asr, output, 0.0)
        loss, _ = asr.nll(output, 0.0)
        assert isinstance(output, ASROutput) and n == batch.num_target_elements
        assert torch.allclose(loss, 0.7 * attention + 0.3 * output.ctc)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            assert model.ctc_proj.weight.grad.abs().sum() > 0
            assert model.encoder_frontend.feature_extractor.layers[0].conv.weight.grad.abs().sum() > 0
        optimizer.step()
        ctc.append(output.ctc.item())
    assert ctc[-1] < 0.6 * ctc[0], ctc


def test_asr_transcripts_are_the_mt_tasks_view_and_cascade_kd_reads_them(cascade, monkeypatch):
    path, _ = cascade
    recipe = load_recipe(path)
    engine = Engine(recipe)
    mt = engine.task("mt")
    outputs = recipe.output_dir / "asr" / "outputs"
    for split in ("train", "valid", "test"):
        assert len((outputs / f"{split}.txt").read_text().splitlines()) == len(mt.pairs()[split])
    batch = next(iter(mt.train_reader(512, seed=0)))
    asr_tokens, _ = batch.views["asr"]
    assert not torch.equal(asr_tokens, batch.source)

    stage = recipe.stage("cascade_kd")
    student = mt.build_model(stage.model)
    method = engine.prepare_method(stage, student, torch.device("cpu"))
    seen = []
    forward = type(mt).forward

    def spy(self, model, batch, view=None):
        seen.append(("student" if model is student else "teacher", view))
        return forward(self, model, batch, view)

    monkeypatch.setattr(type(mt), "forward", spy)
    method.loss(batch, step=1)
    assert seen == [("student", "asr"), ("teacher", None)]


def test_a_changed_asr_stage_changes_the_mt_stages(cascade, tmp_path):
    path, reports = cascade
    assert reports["cascade_kd"].task == "mt" and reports["asr"].task == "asr"
    recipe = load_recipe(path)
    changed = load_recipe(path, ["stages.asr.training.lr=0.002"])
    for name in ("mt_gold", "cascade_kd"):
        assert Engine(changed).stage_hash(changed.stage(name)) != Engine(recipe).stage_hash(recipe.stage(name))
