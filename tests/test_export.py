"""``seqkd export --format ctranslate2``: a tiny trained translation student decodes in CTranslate2
as in PyTorch (greedy, token for token), int8 loads and decodes, and what cannot be exported is
refused with one line and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqkd.cli import main
from tests.conftest import REPO, tiny_recipe, write_recipe

ctranslate2 = pytest.importorskip("ctranslate2")

SENTENCES = 24  # test sentences compared token for token


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A recipe whose ``student`` is trained (60 steps on 300 pairs) and whose ``later`` is not."""
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    root = tmp_path_factory.mktemp("export")
    recipe = tiny_recipe(root / "run", stages=[
        {"name": "student", "method": "supervised", "model": "student", "evaluate": False},
        {"name": "later", "method": "supervised", "model": "student", "evaluate": False},
    ])
    recipe["task"]["data"]["max_train_pairs"] = 300
    recipe["training"].update(max_steps=60, validate_every=60, checkpoint_every=60, log_every=60, warmup_steps=10)
    path = write_recipe(root / "tiny.yaml", recipe)
    Engine(load_recipe(path)).run(only=["student"])
    return path


def _sources(task, count: int) -> list[str]:
    """Test sources short enough that neither engine cuts them."""
    return [p.source for p in task.pairs()["test"] if len(task.vocab.encode(p.source)) < task.max_source_len - 1][:count]


def _greedy_pairs(task, model, folder: Path, sources: list[str]) -> list[tuple[list[int], list[int]]]:
    """(PyTorch, CTranslate2) greedy token ids of each source, each decoded alone with seqkd's length cap."""
    from seqkd.tasks.seq2seq.config import BeamSettings
    from seqkd.tasks.seq2seq.decode import beam_search
    from seqkd.tasks.seq2seq.export import max_decoding_length

    settings = BeamSettings(beam_size=1, batch_size=1)
    translator = ctranslate2.Translator(str(folder), device="cpu", intra_threads=1)
    ids = task.encode_sources(sources)
    expected = beam_search(model, ids, task.vocab_size, settings, task._positions, max_source_len=task.max_source_len).token_ids
    got = []
    for source, tokens in zip(sources, ids):
        result = translator.translate_batch(
            [task.vocab.encode(source, out_type=str)], beam_size=1, min_decoding_length=0,
            max_decoding_length=max_decoding_length(settings, len(tokens) - 1, task._positions),
            max_input_length=task.max_source_len,
        )
        got.append([task.vocab.piece_to_id(piece) for piece in result[0].hypotheses[0]])
    return list(zip(expected, got))


def test_float32_export_decodes_like_pytorch_token_for_token(run, capsys):
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    code, out, err = cli(capsys, "export", str(run), "--stage", "student", "--format", "ctranslate2", "--quantization", "float32")
    assert code == 0, err
    folder = run.parent / "run" / "_export" / "student-ctranslate2-float32"
    assert out.startswith(f"wrote {folder} (ctranslate2, float32,")
    assert {"model.bin", "config.json", "shared_vocabulary.json", "sentencepiece.model", "seqkd-export.json"} <= {p.name for p in folder.iterdir()}
    manifest = json.loads((folder / "seqkd-export.json").read_text())
    assert manifest["stage"] == "student" and manifest["translate_options"]["max_input_length"] == 48
    vocabulary = json.loads((folder / "shared_vocabulary.json").read_text())
    assert vocabulary[:4] == ["<blank>", "<unk>", "<s>", "</s>"]

    _, task, model = Engine(load_recipe(run)).trained_model("student")
    assert (folder / "sentencepiece.model").read_bytes() == task._vocab_path.read_bytes()
    assert vocabulary[4:] == [task.vocab.id_to_piece(i) for i in range(4, task.vocab_size)]
    pairs = _greedy_pairs(task, model.eval(), folder, _sources(task, SENTENCES))
    assert len(pairs) == SENTENCES and len({tuple(e) for e, _ in pairs}) > 1  # the model says different things
    assert [e for e, _ in pairs] == [g for _, g in pairs]


def test_ctranslate2_engine_finds_the_teachers_hypotheses(run):
    """``engine: ctranslate2`` (what a seq-KD teacher builds its n-best cache with) gives fairseq2's
    best hypothesis and score for every source whose hypotheses stay under the length limit (at
    the limit fairseq2 forces an EOS and counts it, CTranslate2 stops: docs/deployment.md)."""
    from seqkd.engine import Engine, load_trained_model
    from seqkd.recipe import load_recipe
    from seqkd.tasks.seq2seq.export import max_decoding_length

    engine = Engine(load_recipe(run))
    task = engine.task()
    model, _ = load_trained_model(task, engine.stage_dir("student") / "model.pt")
    settings = {e: task.generation_schema(beam_size=3, engine=e) for e in ("pytorch", "ctranslate2", "ctranslate2_int8")}
    assert "engine" not in settings["pytorch"].model_dump()  # caches and stages keyed before the option stay valid
    n = 64
    found = {e: task.generate(model, "train", 0, n, s, 3) for e, s in settings.items()}
    sources = [task._examples("train")[i]["source"] for i in range(n)]
    caps = [max_decoding_length(settings["pytorch"], len(s) - 1, task._positions) for s in sources]
    free = [i for i in range(n) if all(len(h) < caps[i] for e in ("pytorch", "ctranslate2") for h, _ in found[e][i])]
    assert len(free) >= 8, f"only {len(free)} of {n} sources decode under the length limit"
    for i in free:
        (pt_tokens, pt_score), (ct_tokens, ct_score) = found["pytorch"][i][0], found["ctranslate2"][i][0]
        assert ct_tokens == pt_tokens and abs(ct_score - pt_score) < 1e-3, i
    for hyps in found["ctranslate2_int8"]:  # rounded weights: valid hypotheses, not necessarily the same
        assert len(hyps) == 3 and all(0 <= t < task.vocab_size for h, _ in hyps for t in h)
    # weights changed in place, and another model object: each is converted anew, never a stale translator
    import copy

    other = copy.deepcopy(model)
    for changed, factor in ((model, 1.2), (other, 0.8)):
        with torch.no_grad():
            changed.final_proj.weight.mul_(factor)
        pt = task.generate(changed, "train", 0, n, settings["pytorch"], 1)
        ct = task.generate(changed, "train", 0, n, settings["ctranslate2"], 1)
        free = [i for i in range(n) if all(len(h) < caps[i] for r in (pt, ct) for h, _ in r[i])]
        assert any(pt[i][0][0] != found["pytorch"][i][0][0] for i in range(n))  # the change shows in the outputs
        assert free and all(pt[i][0][0] == ct[i][0][0] for i in free)


def test_encoder_and_decoder_of_different_widths_and_heads_export(run, tmp_path):
    """CTranslate2 takes a half-width decoder with its own heads: the cross-attention's key and value
    projections map the encoder's width onto the decoder's in both engines."""
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe
    from seqkd.tasks.seq2seq.config import BeamSettings
    from seqkd.tasks.seq2seq.model import TransformerConfig

    task = Engine(load_recipe(run)).task()
    torch.manual_seed(0)
    model = task.build_model(TransformerConfig(
        encoder_layers=2, decoder_layers=1, encoder_dim=64, decoder_dim=32, encoder_ffn_dim=96, encoder_heads=4, decoder_heads=2,
    )).eval()
    with torch.no_grad():  # weights far from their initial scale, so that outputs vary with every weight
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    task.export_ctranslate2(model, tmp_path, "float32", BeamSettings())
    pairs = _greedy_pairs(task, model, tmp_path, _sources(task, 8))
    assert len({tuple(e) for e, _ in pairs}) > 1
    assert [e for e, _ in pairs] == [g for _, g in pairs]


def test_int8_export_from_the_run_folder_loads_and_decodes(run, capsys):
    run_dir = run.parent / "run"
    code, out, err = cli(capsys, "export", str(run_dir), "--stage", "student", "--format", "ctranslate2", "--quantization", "int8")
    assert code == 0, err
    folder = run_dir / "_export" / "student-ctranslate2-int8"
    float32 = run_dir / "_export" / "student-ctranslate2-float32" / "model.bin"
    if float32.exists():
        assert (folder / "model.bin").stat().st_size < float32.stat().st_size
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_file=str(folder / "sentencepiece.model"))
    translator = ctranslate2.Translator(str(folder), device="cpu", compute_type="int8", intra_threads=1)
    sources = ["In the beginning God created the heavens and the earth.", "And God said, Let there be light."]
    results = translator.translate_batch([vocab.encode(s, out_type=str) for s in sources], beam_size=2, max_decoding_length=40)
    texts = [vocab.decode(r.hypotheses[0]) for r in results]
    assert all(isinstance(t, str) for t in texts) and any(texts)
    assert code == 0 and cli(capsys, "export", str(run_dir), "--stage", "student", "--format", "ctranslate2", "--quantization", "int8")[0] == 0


def _one_line_refusal(capsys, *args: str) -> str:
    code, out, err = cli(capsys, "export", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_refusals_are_one_line_with_exit_status_2(run, capsys, tmp_path, monkeypatch):
    fmt = ("--format", "ctranslate2")
    assert "no stage 'nope' (stages: student, later)" in _one_line_refusal(capsys, str(run), "--stage", "nope", *fmt)
    assert "no stage 'nope' (stages: student)" in _one_line_refusal(capsys, str(run.parent / "run"), "--stage", "nope", *fmt)
    assert "stage 'later' has not been trained; run `seqkd run" in _one_line_refusal(capsys, str(run), "--stage", "later", *fmt)
    line = _one_line_refusal(capsys, str(REPO / "recipes" / "debian-sections" / "quick.yaml"), "--stage", "teacher", *fmt)
    assert "'classification' task, which ctranslate2 cannot express" in line and "no projection would make it expressible" in line
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    line = _one_line_refusal(capsys, str(run), "--stage", "student", *fmt, "--output", str(tmp_path / "mine"))
    assert "exists and is not a seqkd export" in line and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"

    import seqkd.tasks.seq2seq.adapter as adapter

    build = adapter.build_transformer

    def with_tanh(*args, **kwargs):
        model = build(*args, **kwargs)
        model.decoder.layers[0].ffn.inner_activation = torch.nn.Tanh()
        return model

    monkeypatch.setattr(adapter, "build_transformer", with_tanh)
    line = _one_line_refusal(capsys, str(run), "--stage", "student", *fmt, "--output", str(tmp_path / "tanh"))
    assert "decoder layer 0's feed-forward network uses the activation Tanh" in line
    assert "no projection would make it expressible; CTranslate2 has ReLU, GELU and SiLU" in line
    assert not (tmp_path / "tanh").exists() and not list(tmp_path.glob(".tanh*"))


def test_a_failed_export_leaves_the_previous_one(tmp_path):
    from seqkd.export import MANIFEST, write_folder

    target = tmp_path / "out"
    write_folder(target, lambda folder: (folder / MANIFEST).write_text("{}"))

    def fail(folder: Path) -> None:
        (folder / "model.bin").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_folder(target, fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and [p.name for p in target.iterdir()] == [MANIFEST]
