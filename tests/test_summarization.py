"""The summarization task, its readers and ROUGE, the shared noise, self-KD and noisy self-KD."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest
import torch

from seqkd.engine import Engine
from seqkd.errors import DataError
from seqkd.method import Teacher
from seqkd.recipe import RecipeError, load_recipe
from seqkd.tasks.seq2seq.config import Seq2SeqNoise
from seqkd.tasks.seq2seq.vocab import EOS
from seqkd.tasks.summarization.adapter import rouge
from tests.conftest import REPO, kill_and_resume, write_recipe

DESCRIPTIONS = REPO / "data" / "debian-descriptions" / "summarization.jsonl.gz"
MODEL = {"encoder_layers": 1, "decoder_layers": 1, "encoder_dim": 96, "encoder_ffn_dim": 192, "encoder_heads": 4}
NOISE = {"word_drop": 0.1, "word_replace": 0.1, "replace_with": "neighbours", "neighbours": 5,
         "word_shuffle": 3, "sentence_drop": 0.1, "sentence_shuffle": 2}


def tiny_summaries(output_dir: Path, **changes) -> dict:
    """3,000 real Debian descriptions, a 1-1 model: small enough for CI."""
    recipe = {
        "description": "tiny summarization recipe",
        "task": {"name": "summarization", "data": {"corpus": str(DESCRIPTIONS), "max_train_pairs": 3000},
                 "vocab_size": 2000, "max_source_len": 64, "max_target_len": 24},
        "models": {"model": MODEL},
        "training": {"max_steps": 300, "max_tokens": 4096, "lr": 5e-3, "warmup_steps": 50, "label_smoothing": 0.1,
                     "log_every": 50, "validate_every": 150, "checkpoint_every": 150},
        "evaluation": {"beam_size": 2, "max_sentences": 150, "split": "valid", "max_len_b": 16},
        "output": {"dir": str(output_dir)},
        "stages": [
            {"name": "teacher", "method": "supervised", "model": "model"},
            {"name": "noisy", "method": "noisy_self_kd", "model": "model", "teacher": "teacher",
             "training": {"max_steps": 150}, "options": {"alpha": 0.6, "teacher_dropout": 0.15, "noise": NOISE}},
        ],
    }
    recipe.update(changes)
    return recipe


@pytest.fixture(scope="module")
def summaries(tmp_path_factory):
    """The tiny recipe run once: (recipe path, reports by stage)."""
    root = tmp_path_factory.mktemp("summaries")
    path = write_recipe(root / "tiny.yaml", tiny_summaries(root / "run"))
    return path, {r.name: r for r in Engine(load_recipe(path)).run()}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """The tiny recipe's prepared task (its vocabulary), nothing trained."""
    root = tmp_path_factory.mktemp("summarization-task")
    return Engine(load_recipe(write_recipe(root / "tiny.yaml", tiny_summaries(root / "run")))).task()


# -- end to end ------------------------------------------------------------------------------


def test_a_trained_summarizer_beats_an_untrained_one(summaries):
    path, reports = summaries
    recipe = load_recipe(path)
    task = Engine(recipe).task()
    untrained = task.build_model(recipe.models["model"])
    baseline, _ = Engine(recipe).score_model(task, untrained, recipe.only_task().evaluation)
    for name in ("teacher", "noisy"):
        metrics = reports[name].metrics
        assert metrics["rougeL"] > baseline["rougeL"] + 3 and metrics["rougeL"] > 5 * baseline["rougeL"], (name, metrics, baseline)
        assert metrics["rouge1"] > metrics["rouge2"] > 0 and "stemmer:porter" in metrics["rouge_signature"]
    assert reports["teacher"].metrics["documents"] == 150


def test_summarize_command_prints_the_models_summaries(summaries, tmp_path, capsys):
    from seqkd.cli import main

    path, _ = summaries
    documents = tmp_path / "docs.txt"
    documents.write_text("A command-line tool to convert images between formats. It reads PNG and JPEG.\nA library for parsing XML.\n")
    assert main(["summarize", str(path), "--stage", "teacher", "--input", str(documents)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.strip() for line in lines)


def test_noisy_self_kd_resumes_bit_identically(summaries, tmp_path, monkeypatch):
    """The noise generator is checkpointed: a killed run draws the noise the straight run drew."""
    from seqkd.checkpoint import safe_load
    from seqkd_plugins.noisy_self_kd import NoisySelfKD

    path, _ = summaries
    teacher = load_recipe(path).output_dir / "teacher" / "model.pt"

    def recipe_at(out: Path) -> Path:
        r = tiny_summaries(out, stages=[{"name": "noisy", "method": "noisy_self_kd", "model": "model",
                                         "teacher_checkpoint": str(teacher), "options": {"noise": NOISE}}])
        r["training"].update(max_steps=20, checkpoint_every=10, validate_every=10, log_every=10)
        r["evaluation"]["max_sentences"] = 10
        return write_recipe(tmp_path / f"{out.name}.yaml", r)

    Engine(load_recipe(recipe_at(tmp_path / "straight"))).run()
    kill_and_resume(NoisySelfKD, 14, lambda: Engine(load_recipe(recipe_at(tmp_path / "resumed"))).run(), monkeypatch)
    a, b = (safe_load(tmp_path / run / "noisy" / "checkpoints" / "last.pt") for run in ("straight", "resumed"))
    assert all(torch.equal(a["student"][k], b["student"][k]) for k in a["student"])
    assert torch.equal(a["method_state"]["noise_generator"], b["method_state"]["noise_generator"])


# -- the noise -----------------------------------------------------------------------------


def noise(**fields) -> Seq2SeqNoise:
    off = {"word_drop": 0.0, "word_replace": 0.0, "word_shuffle": 0, "sentence_drop": 0.0, "sentence_shuffle": 0}
    return Seq2SeqNoise(**{**off, **fields})


def noisy(task, tokens: list[int], settings: Seq2SeqNoise, seed: int = 0, neighbours=None) -> list[int]:
    """The noisy copy of one source (``tokens`` without EOS)."""
    batch = task.indexed_batches("valid", 0, 1, 4096)[0]
    source = torch.tensor([tokens + [EOS]])
    batch = batch.with_inputs(None, source, [source.shape[1]])
    out = task.perturb(batch, settings, torch.Generator().manual_seed(seed), neighbours=neighbours)
    assert out.source[0, out.source_lens[0] - 1].item() == EOS
    return out.source[0, : out.source_lens[0] - 1].tolist()


def words(task, n: int) -> list[int]:
    """``n`` distinct ordinary tokens (none ends a sentence)."""
    ids = [i for i in range(EOS + 1, task.vocab_size) if not task.sentence_ends[i]]
    return ids[:n]


def test_word_drop_removes_the_tokens_its_draws_say(task):
    tokens = words(task, 200)
    kept = noisy(task, tokens, noise(word_drop=0.25), seed=3)
    expected = (torch.rand(200, generator=torch.Generator().manual_seed(3)) >= 0.25).sum().item()
    assert len(kept) == expected and 120 < expected < 180
    assert kept == [t for t in tokens if t in set(kept)]  # the order of what is left is kept
    assert len(noisy(task, tokens, noise(word_drop=1.0))) == 1  # a source never becomes empty


def test_a_local_shuffle_moves_no_token_a_window_or_more(task):
    tokens = words(task, 300)
    for window in (2, 3, 5):
        shuffled = noisy(task, tokens, noise(word_shuffle=window), seed=window)
        assert sorted(shuffled) == sorted(tokens) and shuffled != tokens
        assert max(abs(shuffled.index(t) - i) for i, t in enumerate(tokens)) < window


def test_sentence_operations_keep_whole_sentences(task):
    period = task.vocab.piece_to_id(".")
    assert task.sentence_ends[period]
    body = words(task, 60)
    sentences = [body[i : i + 6] + [period] for i in range(0, 60, 6)]  # ten sentences
    flat = [t for s in sentences for t in s]
    moved = 0
    for seed in range(6):
        out = noisy(task, flat, noise(sentence_drop=0.3, sentence_shuffle=2), seed=seed)
        ends = [i + 1 for i, t in enumerate(out) if t == period]
        pieces = [out[a:b] for a, b in zip([0] + ends, ends)]
        assert sum(map(len, pieces)) == len(out) and all(p in sentences for p in pieces)
        assert 1 <= len(pieces) < 10  # some dropped, never all
        order = [sentences.index(p) for p in pieces]
        kept = sorted(order)  # drop first, then shuffle what is left: none moves 2 places or more
        assert all(abs(position - kept.index(o)) < 2 for position, o in enumerate(order))
        moved += order != sorted(order)
    assert moved >= 2


def test_replacements_come_from_the_models_nearest_neighbours(task):
    torch.manual_seed(0)
    model = task.build_model(model_config())
    settings = noise(word_replace=0.5, neighbours=3)
    table = task.noise_neighbours(model, settings)
    assert table.shape == (task.vocab_size, 3) and (table > EOS).all()
    assert not (table == torch.arange(task.vocab_size)[:, None]).any()  # never the token itself
    tokens = words(task, 100)
    out = noisy(task, tokens, settings, neighbours=table)
    changed = [(a, b) for a, b in zip(tokens, out) if a != b]
    assert 30 < len(changed) < 70 and all(b in table[a].tolist() for a, b in changed)
    assert task.noise_neighbours(model, noise()) is None
    with pytest.raises(ValueError, match="needs neighbours"):
        noisy(task, tokens, settings)


def test_the_same_seed_gives_the_same_noise_and_the_copies_differ(task):
    tokens = words(task, 80)
    settings = noise(word_drop=0.2, word_shuffle=3, word_replace=0.2, replace_with="random")
    assert noisy(task, tokens, settings, seed=5) == noisy(task, tokens, settings, seed=5)
    generator = torch.Generator().manual_seed(5)
    batch = task.indexed_batches("valid", 0, 8, 4096)[0]
    student, teacher = (task.perturb(batch, settings, generator) for _ in range(2))
    assert not torch.equal(student.source, teacher.source)


# -- the methods ---------------------------------------------------------------------------


def model_config():
    from seqkd.tasks.seq2seq.model import TransformerConfig

    return TransformerConfig(**MODEL, dropout=0.0)


def method(task, options: dict):
    """A noisy_self_kd method whose teacher is a copy of its (untrained) student."""
    from seqkd.method import StageContext
    from seqkd_plugins.noisy_self_kd import NoisySelfKD

    torch.manual_seed(0)
    student = task.build_model(model_config())
    opts = NoisySelfKD.options_model(type(task)).model_validate(options)
    m = NoisySelfKD(opts, task, student, [Teacher.from_model(copy.deepcopy(student))], 0.0)
    m.prepare(StageContext(Path("."), 4096, torch.device("cpu"), False, print, lambda p, t: None))
    return m


def test_the_kd_term_is_zero_when_the_teacher_is_the_student_without_noise(task):
    batch = task.indexed_batches("valid", 0, 16, 4096)[0]
    quiet = method(task, {"teacher_dropout": 0.0, "noisy_copies": []})
    assert quiet.loss(batch, 0).parts["kd"] == pytest.approx(0.0, abs=1e-4)
    loud = method(task, {"teacher_dropout": 0.3, "noise": {**NOISE, "replace_with": "random"}})
    assert loud.teacher.training and all(m.p == 0.3 for m in loud.teacher.modules() if isinstance(m, torch.nn.Dropout))
    assert loud.loss(batch, 0).parts["kd"] > 0.05


def test_self_kd_needs_the_students_architecture(tmp_path):
    r = tiny_summaries(tmp_path / "run", models={"model": MODEL, "big": {**MODEL, "encoder_layers": 2}})
    r["stages"] = [{"name": "teacher", "method": "supervised", "model": "big"},
                   {"name": "self", "method": "self_kd", "model": "model", "teacher": "teacher"}]
    with pytest.raises(RecipeError, match="self_kd needs a teacher with the student's architecture; they differ in encoder_layers: teacher 2, student 1"):
        load_recipe(write_recipe(tmp_path / "r.yaml", r))


def test_a_noise_probability_outside_0_1_names_the_field(tmp_path):
    r = tiny_summaries(tmp_path / "run")
    r["stages"][1]["options"]["noise"] = {**NOISE, "sentence_drop": 1.5}
    with pytest.raises(RecipeError, match=r"stages\[1\]\.options\.noise\.sentence_drop.*less than or equal to 1"):
        load_recipe(write_recipe(tmp_path / "r.yaml", r))


# -- decoding and metrics --------------------------------------------------------------------


def test_trigram_blocking_never_repeats_a_trigram(task):
    from seqkd.tasks.seq2seq.decode import beam_search
    from seqkd.tasks.summarization.config import SummarizationGeneration

    torch.manual_seed(0)
    model = task.build_model(model_config())
    sources = [e["source"].tolist() for e in task._examples("valid")[:16]]

    def trigrams_repeated(settings) -> int:
        out = beam_search(model, sources, task.vocab_size, settings, 128).token_ids
        return sum(len(t) - 2 - len({tuple(t[i : i + 3]) for i in range(len(t) - 2)}) for t in out)

    free = SummarizationGeneration(beam_size=2, min_len=30, max_len_b=30, no_repeat_ngram=0)
    assert trigrams_repeated(free) > 0  # an untrained model repeats itself ...
    assert trigrams_repeated(free.model_copy(update={"no_repeat_ngram": 3})) == 0  # ... unless blocked


def test_rouge_equals_rouge_score_on_known_pairs():
    # "the cat sat on the mat" vs "the cat is on the mat": 5 of 6 words, 3 of 5 bigrams, LCS 5;
    # "dogs running" vs "a dog runs" after stemming: 2 of 2 words vs 2 of 3, 1 of 1 bigram vs 1 of 2
    scores = rouge(["the cat sat on the mat", "dogs running"], ["the cat is on the mat", "a dog runs"])
    assert scores["rouge1"] == pytest.approx(round(100 * (5 / 6 + 0.8) / 2, 2))
    assert scores["rouge2"] == pytest.approx(round(100 * (0.6 + 2 / 3) / 2, 2))
    assert scores["rougeL"] == pytest.approx(round(100 * (5 / 6 + 0.8) / 2, 2))


# -- readers and bad input -------------------------------------------------------------------


def jsonl_recipe(tmp_path: Path, rows: list, **data) -> Path:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    r = tiny_summaries(tmp_path / "run")
    r["task"]["data"] = {"corpus": str(corpus), **data}
    r["task"]["min_train_pairs"] = 1
    return write_recipe(tmp_path / "r.yaml", r)


@pytest.mark.parametrize("row, message", [
    ("[1, 2]", r"c.jsonl:2: not a JSON object but list"),
    ("{not json", r"c.jsonl:2: not a JSON object \(Expecting"),
    ({"document": "a b", "split": "train"}, r"c.jsonl:2: no field 'summary' \(the object has: document, split\)"),
    ({"document": " ", "summary": "s", "split": "train"}, r"c.jsonl:2: field 'document' is empty"),
    ({"document": "d", "summary": "s", "split": "dev"}, r"c.jsonl:2: field 'split' is 'dev'; choose one of: train, valid, test"),
])
def test_bad_jsonl_lines_are_named_by_file_and_line(tmp_path, row, message):
    good = {"document": "A tool.", "summary": "tool", "split": "train"}
    with pytest.raises(DataError, match=message):
        Engine(load_recipe(jsonl_recipe(tmp_path, [good, row]))).task()


def test_field_names_are_configurable_and_long_documents_are_truncated_and_counted(tmp_path, capsys):
    rows = [{"text": " ".join(["word"] * n), "headline": "short title", "part": split}
            for n, split in [(10, "train"), (500, "train"), (5, "valid"), (8, "test"), (400, "test")]]
    path = jsonl_recipe(tmp_path, rows, document_field="text", summary_field="headline", split_field="part")
    engine = Engine(load_recipe(path, ["task.max_source_len=64", "task.vocab_size=64"]))
    task = engine.task()
    assert [len(e["source"]) for e in task._examples("train")] == [11, 64]  # cut, not dropped
    assert "1 of 2 train documents are longer than max_source_len=64 tokens and were truncated" in capsys.readouterr().err
    task._examples("train")
    assert "truncated" not in capsys.readouterr().err  # once
    assert task.score("test", ["short title", "title"], task.evaluation_schema())["truncated_documents"] == 1
    assert task.score("test", ["short title"], task.evaluation_schema())["truncated_documents"] == 0  # of the scored ones



def test_cnn_dailymail_line_files_and_xsum_files_are_read(tmp_path):
    from seqkd.tasks.summarization.corpus import read_xsum

    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.source").write_text(f"the {split} document .\nanother {split} document .\n")
        (tmp_path / f"{split}.target").write_text(f"{split} one\n{split} two\n")
    r = tiny_summaries(tmp_path / "run")
    r["task"].update(data={"format": "lines", **{s: str(tmp_path / s) for s in ("train", "valid", "test")}}, min_train_pairs=1, vocab_size=64)
    pairs = Engine(load_recipe(write_recipe(tmp_path / "r.yaml", r)))._adapter("summarization").pairs()
    assert pairs["valid"][1].source == "another valid document ." and pairs["test"][0].target == "test one"

    xsum = tmp_path / "bbc"
    xsum.mkdir()
    for i in (1, 2, 3):
        (xsum / f"{i}.summary").write_text(
            f"[SN]URL[SN]\nhttp://bbc.co.uk/{i}\n\n[SN]TITLE[SN]\nTitle {i}\n\n[SN]FIRST-SENTENCE[SN]\nSummary {i}.\n\n"
            f"[SN]RESTBODY[SN]\nBody {i} line one.\nBody {i} line two.\n")
    (tmp_path / "split.json").write_text(json.dumps({"train": ["1"], "validation": ["2"], "test": ["3"]}))
    read = read_xsum(xsum, tmp_path / "split.json")
    assert read["valid"][0].source == "Body 2 line one. Body 2 line two." and read["test"][0].target == "Summary 3."
    (xsum / "2.summary").write_text("[SN]URL[SN]\nx\n")
    with pytest.raises(DataError, match=r"2.summary: no \[SN\]FIRST-SENTENCE\[SN\] section"):
        read_xsum(xsum, tmp_path / "split.json")


def test_the_shipped_recipes_validate():
    for path in sorted((REPO / "recipes").glob("*summar*/*.yaml")) + sorted((REPO / "recipes").glob("cnn-dailymail/*.yaml")) + sorted((REPO / "recipes").glob("xsum/*.yaml")):
        load_recipe(path)


def test_the_shipped_descriptions_are_read_with_their_split(task):
    with gzip.open(DESCRIPTIONS, "rt") as f:
        valid = sum(json.loads(line)["split"] == "valid" for line in f)
    assert len(task.pairs()["valid"]) == valid and len(task.pairs()["train"]) == 3000
