"""The hidden_cosine loss: its cosine term, the width check, the learned projection, and real steps
with the translation task."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seqkd.method import StageContext, Teacher
from seqkd.tasks.base import HiddenStates
from seqkd_hidden_cosine import HiddenCosine, HiddenCosineOptions, HiddenWidthMismatch, cosine_loss

CORPUS = Path(__file__).resolve().parents[3] / "data" / "bible-en-es" / "bible-en-es.tsv.gz"


def hidden(seed: int, shape=(2, 5, 16)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def states(h: torch.Tensor, mask: torch.Tensor | None = None) -> HiddenStates:
    mask = torch.ones(h.shape[:2], dtype=torch.bool) if mask is None else mask
    return HiddenStates(h, mask, output=None)


def test_cosine_term_is_zero_for_parallel_states_whatever_their_length():
    h = hidden(0)
    assert cosine_loss(states(h), 3.0 * h).abs().item() < 1e-5


def test_cosine_term_matches_the_formula_and_ignores_padding():
    s, t = hidden(1), hidden(2)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2:] = False
    expected = ((1 - F.cosine_similarity(s, t, dim=-1)) * mask).sum()
    assert torch.allclose(cosine_loss(states(s, mask), t), expected, atol=1e-5)
    t2 = t.clone()
    t2[1, 2:] = -t2[1, 2:]  # changing padded positions changes nothing
    assert torch.allclose(cosine_loss(states(s, mask), t2), expected, atol=1e-5)


def test_different_widths_are_refused_naming_both():
    with pytest.raises(HiddenWidthMismatch, match="the student's are 16 wide, the teacher's 32"):
        cosine_loss(states(hidden(0)), hidden(1, (2, 5, 32)))


def test_a_projection_maps_the_student_width_onto_the_teachers():
    s, t = hidden(3, (2, 5, 8)), hidden(4, (2, 5, 16))
    projection = torch.nn.Linear(8, 16, bias=False)
    expected = (1 - F.cosine_similarity(projection(s), t, dim=-1)).sum()
    assert torch.allclose(cosine_loss(states(s), t, projection), expected, atol=1e-5)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    if not CORPUS.exists():
        pytest.skip(f"{CORPUS} not found (run the tests from a seqkd checkout)")
    from seqkd.tasks.translation.adapter import TranslationTask
    from seqkd.tasks.translation.config import TranslationConfig

    root = tmp_path_factory.mktemp("hidden_cosine")
    config = TranslationConfig.model_validate({
        "source_lang": "en", "target_lang": "es", "data": {"corpus": str(CORPUS), "max_train_pairs": 300},
        "vocab_size": 1000, "max_seq_len": 48,
    })
    task = TranslationTask(config, root / "shared", root)
    task.prepare()
    return task


def model(task, layers: int, width: int = 48):
    config = task.model_schema.model_validate({
        "encoder_layers": layers, "decoder_layers": layers, "encoder_dim": width,
        "encoder_ffn_dim": 2 * width, "encoder_heads": 4, "dropout": 0.0,
    })
    return task.build_model(config)


def hidden_cosine(task, student, teacher, **options) -> HiddenCosine:
    """The method as the engine builds it: options, task, student, one teacher; ``prepare`` run."""
    method = HiddenCosine(HiddenCosineOptions(**options), task, student, [Teacher.from_model(teacher)], label_smoothing=0.1)
    method.prepare(StageContext(
        cache_dir=Path("unused"), max_tokens=512, device=torch.device("cpu"), rebuild=False,
        log=lambda text: None, write_text=lambda path, text: None, teacher_ids=["in-memory"],
    ))
    return method


def first_batch(task):
    return next(iter(task.train_reader(512, seed=0)))


def test_a_step_on_real_data_trains_only_the_student(task):
    torch.manual_seed(0)
    teacher, student = model(task, layers=2), model(task, layers=1)
    method = hidden_cosine(task, student, teacher, alpha=0.5, beta=1.0)
    batch = first_batch(task)
    out = method.loss(batch, step=0)
    out.loss.backward()
    assert set(out.parts) == {"nll", "kd", "cos"} and out.parts["cos"] > 0 and out.parts["kd"] > 0
    assert out.num_targets == batch.num_target_elements
    expected = 0.5 * out.parts["nll"] + 0.5 * out.parts["kd"] + out.parts["cos"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert len(method.modules) == 0  # no projection unless asked for


def test_distillation_terms_vanish_when_the_student_is_the_teacher(task):
    torch.manual_seed(0)
    teacher = model(task, layers=1)
    student = copy.deepcopy(teacher)
    out = hidden_cosine(task, student, teacher).loss(first_batch(task), step=0)
    assert out.parts["cos"] < 1e-3 and out.parts["kd"] < 1e-3


def test_a_narrower_student_is_refused_at_the_first_step(task):
    method = hidden_cosine(task, model(task, 1, width=32), model(task, 1))
    with pytest.raises(HiddenWidthMismatch, match="the student's are 32 wide, the teacher's 48.*projection: true"):
        method.loss(first_batch(task), step=0)


def test_a_narrower_student_trains_through_a_projection_the_method_owns(task):
    torch.manual_seed(0)
    student, teacher = model(task, 1, width=32), model(task, 2)
    method = hidden_cosine(task, student, teacher, projection=True)
    projection = method.modules["projection"]
    assert tuple(projection.weight.shape) == (48, 32)  # student width 32 -> teacher width 48
    out = method.loss(first_batch(task), step=0)
    out.loss.backward()
    assert out.parts["cos"] > 0 and projection.weight.grad is not None
    assert all(p.grad is not None for p in student.parameters())
    # the student's model file holds the student alone; the projection is checkpointed apart
    assert not any(name.startswith("projection") for name in method.student_state_dict())
    assert set(method.modules.state_dict()) == {"projection.weight"}
