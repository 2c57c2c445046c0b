"""The word-KD loss and the teacher/student gradient boundary."""

from __future__ import annotations

import pytest
import torch

from seqkd.tasks.base import TokenLogits
from seqkd.losses import token_kl
from seqkd_plugins.word_kd import WordKD, WordKDOptions


def logits(seed: int, shape=(2, 5, 11)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_kd_term_is_zero_when_student_equals_teacher():
    z = logits(0)
    out = TokenLogits(z, torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool))
    assert token_kl(out, z.clone(), temperature=2.0).abs().item() < 1e-5


def test_kd_term_matches_the_formula_and_ignores_padding():
    s, t = logits(1), logits(2)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    out = TokenLogits(s, torch.zeros(2, 5, dtype=torch.long), mask)
    T = 2.0
    kd = token_kl(out, t, temperature=T)
    p_t = torch.softmax(t / T, -1)
    expected = (p_t * (torch.log_softmax(t / T, -1) - torch.log_softmax(s / T, -1))).sum(-1)
    assert torch.allclose(kd, (expected * mask).sum() * T**2, atol=1e-4)
    t2 = t.clone()
    t2[1, 3:] += 100.0  # changing padded positions changes nothing
    kd2 = token_kl(out, t2, temperature=T)
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


def test_reverse_kl_is_the_other_direction_and_t_squared_scales_both():
    s, t = logits(3), logits(4)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 4] = False
    out = TokenLogits(s, torch.zeros(2, 5, dtype=torch.long), mask)
    T = 3.0
    log_p, log_q = torch.log_softmax(t / T, -1)[mask], torch.log_softmax(s / T, -1)[mask]
    forward = (log_p.exp() * (log_p - log_q)).sum() * T**2
    reverse = (log_q.exp() * (log_q - log_p)).sum() * T**2
    assert torch.allclose(token_kl(out, t, T), forward, atol=1e-4)
    assert torch.allclose(token_kl(out, t, T, direction="reverse"), reverse, atol=1e-4)
    assert not torch.allclose(forward, reverse, atol=1e-3)
    assert torch.allclose(token_kl(out, t, T), T**2 * token_kl(TokenLogits(s / T, out.targets, mask), t / T), atol=1e-4)


def test_hidden_state_losses_are_summed_over_real_positions():
    from seqkd.losses import hidden_cosine, hidden_mse

    a, b = logits(5, (2, 4, 8)), logits(6, (2, 4, 8))
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    assert hidden_cosine(a, a.clone(), mask).abs().item() < 1e-5 and hidden_mse(a, a.clone(), mask).item() == 0
    cos = 1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert torch.allclose(hidden_cosine(a, b, mask), cos[mask].sum())
    assert torch.allclose(hidden_mse(a, b, mask), ((a - b) ** 2).sum(-1)[mask].sum())
    b2 = b.clone()
    b2[0, 3] += 50.0  # padding changes nothing
    assert torch.allclose(hidden_mse(a, b2, mask), hidden_mse(a, b, mask))


def test_word_kd_weighs_the_kd_term_by_alpha_and_the_nll_by_one_minus_alpha(tmp_path):
    from seqkd.method import Teacher
    from seqkd.tasks.translation.adapter import TranslationTask
    from seqkd.tasks.translation.config import TranslationConfig
    from tests.conftest import tiny_recipe

    recipe = tiny_recipe(tmp_path)
    config = TranslationConfig.model_validate({**recipe["task"], "data": {**recipe["task"]["data"], "max_train_pairs": 300}})
    task = TranslationTask(config, tmp_path / "shared", tmp_path)
    task.prepare()
    torch.manual_seed(0)
    teacher = task.build_model(task.model_schema.model_validate({**recipe["models"]["teacher"], "dropout": 0.0}))
    student = task.build_model(task.model_schema.model_validate({**recipe["models"]["student"], "dropout": 0.0}))
    batch = next(iter(task.train_reader(512, seed=0)))
    out = WordKD(WordKDOptions(alpha=0.3, temperature=2.0), task, student, [Teacher.from_model(teacher)], 0.1).loss(batch, 0)
    nll, kd = out.parts["nll"], out.parts["kd"]
    assert abs(nll - kd) > 1.0  # so swapping the weights would show
    assert out.loss.item() == pytest.approx(0.7 * nll + 0.3 * kd, rel=1e-5)
