"""``muka``: uncertainty, padding into the union label space, hard/soft targets and the margin
weight against a hand computation; MC dropout; an end-to-end amalgamation of two teachers trained
on disjoint label sets of the Debian synopses."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from seqkd.errors import SeqkdError
from seqkd_plugins.muka import MukaOptions, label_slices, padded, scores, targets
from tests.conftest import write_recipe

REPO = Path(__file__).resolve().parent.parent
SYNOPSES = REPO / "data" / "debian-descriptions" / "classification.jsonl.gz"
STUDENT = ["a", "b", "c", "d", "e"]


def fixed() -> torch.Tensor:
    """Teacher A (labels b, a) is sure of a; teacher B (labels c, d, e) knows nothing."""
    slices = label_slices(STUDENT, [["b", "a"], ["c", "d", "e"]], ["A", "B"])
    return padded([torch.tensor([[0.1, 0.9]]), torch.full((1, 3), 1 / 3)], slices, len(STUDENT))


def test_padding_scores_targets_and_weights_match_a_hand_computation():
    p = fixed()
    assert torch.allclose(p[0], torch.tensor([[0.9, 0.1, 0, 0, 0], [0, 0, 1 / 3, 1 / 3, 1 / 3]]))
    s_a = 1 - (-(0.9 * math.log(0.9) + 0.1 * math.log(0.1))) / math.log(2)
    assert scores(p, [2, 3])[0].tolist() == pytest.approx([s_a, 0.0], abs=1e-6)
    hard, w = targets(p, [2, 3], MukaOptions(combine="hard"))
    assert hard[0].tolist() == pytest.approx([0.9, 0.1, 0, 0, 0]) and w.item() == pytest.approx(s_a + 1e-6)
    soft, _ = targets(p, [2, 3], MukaOptions(combine="soft", score_temperature=0.2))
    mix = math.exp(s_a / 0.2) / (math.exp(s_a / 0.2) + 1)
    assert soft[0].tolist() == pytest.approx([0.9 * mix, 0.1 * mix] + [(1 - mix) / 3] * 3, abs=1e-6)
    vanilla, w = targets(p, [2, 3], MukaOptions(combine="vanilla"))
    assert vanilla[0].tolist() == pytest.approx([0.45, 0.05, 1 / 6, 1 / 6, 1 / 6]) and w.item() == 1.0
    _, w = targets(p, [2, 3], MukaOptions(combine="soft", margin_weight=False))
    assert w.item() == 1.0


def test_teachers_must_know_only_student_labels_and_not_share_any():
    with pytest.raises(SeqkdError, match="teacher 'B' predicts label\\(s\\) z that the student's task does not have"):
        label_slices(STUDENT, [["a"], ["z"]], ["A", "B"])
    with pytest.raises(SeqkdError, match="label 'a' belongs to teachers 'A' and 'B'"):
        label_slices(STUDENT, [["a", "b"], ["a", "c"]], ["A", "B"])


GROUPS = {"one": ["games", "sound", "graphics"], "two": ["science", "mail", "net"]}


def muka_recipe(folder: Path) -> Path:
    def task(labels: list[str]) -> dict:
        return {"name": "classification", "max_seq_len": 24, "min_train_examples": 50,
                "data": {"corpus": str(SYNOPSES), "labels": labels}, "evaluation": {"split": "test"}}

    encoder = {"kind": "encoder", "layers": 1, "dim": 64, "heads": 4, "ffn_dim": 128, "dropout": 0.2, "pooling": "mean"}
    recipe = {
        "description": "two teachers on disjoint labels amalgamated",
        "tasks": {"one": task(GROUPS["one"]), "two": task(GROUPS["two"]), "union": task(GROUPS["one"] + GROUPS["two"])},
        "models": {"encoder": encoder},
        "training": {"max_steps": 150, "max_tokens": 768, "lr": 0.005, "warmup_steps": 15, "label_smoothing": 0.0,
                     "log_every": 50, "validate_every": 150, "checkpoint_every": 150},
        "output": {"dir": str(folder / "run")},
        "stages": [
            {"name": "teacher_one", "task": "one", "method": "supervised", "model": "encoder"},
            {"name": "teacher_two", "task": "two", "method": "supervised", "model": "encoder"},
            {"name": "muka", "task": "union", "method": "muka", "model": "encoder", "teachers": ["teacher_one", "teacher_two"],
             "options": {"mc_passes": 4}},
        ],
    }
    return write_recipe(folder / "muka.yaml", recipe)


def test_two_teachers_of_disjoint_labels_teach_a_student_of_their_union(tmp_path):
    from seqkd.checkpoint import load_model_file
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    recipe = load_recipe(muka_recipe(tmp_path))
    reports = {r.name: r for r in Engine(recipe).run()}
    engine = Engine(recipe)
    for name, group in GROUPS.items():
        assert load_model_file(engine.stage_dir(f"teacher_{name}") / "model.pt")["output_space"]["labels"] == sorted(group)
    union = engine.task("union")
    torch.manual_seed(0)
    untrained = engine.score_model(union, union.build_model(recipe.models["encoder"]), recipe.tasks["union"].evaluation)[0]
    assert reports["muka"].metrics["accuracy"] > untrained["accuracy"] + 15, (reports["muka"].metrics, untrained)
    assert (recipe.output_dir / "_cache" / "muka" / "mc").exists()  # the MC passes were cached

    stage = recipe.stage("muka")
    method = engine.prepare_method(stage, union.build_model(stage.model), torch.device("cpu"))
    batch = next(iter(union.train_reader(256, seed=0)))
    torch.manual_seed(1)
    first = method.mc_probs(batch)
    torch.manual_seed(1)
    again = method.mc_probs(batch)
    assert torch.equal(first, again)  # reproducible by seed
    method.options = method.options.model_copy(update={"mc_passes": 1})
    assert not torch.equal(method.mc_probs(batch), method.mc_probs(batch))  # dropout is on: passes differ
    assert torch.allclose(first.sum(-1), torch.ones(first.shape[:2]))
