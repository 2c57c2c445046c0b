"""The word-KD loss and the teacher/student gradient boundary."""

from __future__ import annotations

import torch

from seqkd.tasks.base import TokenLogits
from seqkd_plugins.word_kd import WordKD, WordKDOptions, kd_loss


def logits(seed: int, shape=(2, 5, 11)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_kd_term_is_zero_when_student_equals_teacher():
    z = logits(0)
    out = TokenLogits(z, torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool))
    assert kd_loss(out, z.clone(), temperature=2.0).abs().item() < 1e-5


def test_kd_term_matches_the_formula_and_ignores_padding():
    s, t = logits(1), logits(2)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    out = TokenLogits(s, torch.zeros(2, 5, dtype=torch.long), mask)
    T = 2.0
    kd = kd_loss(out, t, temperature=T)
    p_t = torch.softmax(t / T, -1)
    expected = (p_t * (torch.log_softmax(t / T, -1) - torch.log_softmax(s / T, -1))).sum(-1)
    assert torch.allclose(kd, (expected * mask).sum() * T**2, atol=1e-4)
    t2 = t.clone()
    t2[1, 3:] += 100.0  # changing padded positions changes nothing
    kd2 = kd_loss(out, t2, temperature=T)
    assert torch.allclose(kd, kd2)


def test_gradients_reach_only_the_student(tmp_path):
    from seqkd.method import Teacher
    from seqkd.tasks.translation.adapter import TranslationTask
    from seqkd.tasks.translation.config import TranslationConfig
    from tests.conftest import tiny_recipe

    recipe = tiny_recipe(tmp_path)
    config = TranslationConfig.model_validate({**recipe["task"], "data": {**recipe["task"]["data"], "max_train_pairs": 300}})
    task = TranslationTask(config, tmp_path / "shared", tmp_path)
    task.prepare()
    schema = task.model_schema
    teacher = task.build_model(schema.model_validate(recipe["models"]["teacher"]))
    student = task.build_model(schema.model_validate(recipe["models"]["student"]))
    method = WordKD(WordKDOptions(alpha=0.5, temperature=2.0), task, student, [Teacher.from_model(teacher)], label_smoothing=0.1)
    batch = next(iter(task.train_reader(512, seed=0)))
    out = method.loss(batch, 0)
    out.loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    assert out.parts["kd"] > 0 and out.num_targets == batch.num_target_elements
