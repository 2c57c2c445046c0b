"""The hand-written CRF against brute force over every tag sequence of small random chains."""

from __future__ import annotations

import itertools

import pytest
import torch

from seqkd.tasks.ner.crf import CRF


def random_crf(num_tags: int, seed: int) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(num_tags)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def brute_force(crf: CRF, emissions: torch.Tensor, length: int) -> list[tuple[tuple[int, ...], float]]:
    """Every path of one row (emissions (T, K)) with its score, best first."""
    paths = []
    for path in itertools.product(range(crf.num_tags), repeat=length):
        tags = torch.tensor([list(path) + [0] * (emissions.shape[0] - length)])
        mask = torch.arange(emissions.shape[0]).unsqueeze(0) < length
        paths.append((path, crf.path_score(emissions.unsqueeze(0), tags, mask).item()))
    return sorted(paths, key=lambda p: -p[1])


def batch(seed: int, n: int = 3, length: int = 4, tags: int = 3):
    torch.manual_seed(seed)
    emissions = torch.randn(n, length, tags)
    lengths = torch.tensor([length] + [max(1, length - 1 - i) for i in range(n - 1)])
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    return emissions, mask, lengths.tolist()


@pytest.mark.parametrize("seed", range(4))
def test_kbest_equals_brute_force_top_k(seed):
    crf = random_crf(3, seed)
    emissions, mask, lengths = batch(seed)
    k = 7
    got = crf.kbest(emissions, mask, k)
    for b, length in enumerate(lengths):
        expected = brute_force(crf, emissions[b], length)[:k]
        assert [tuple(p) for p, _ in got[b]] == [p for p, _ in expected]
        assert [s for _, s in got[b]] == pytest.approx([s for _, s in expected], abs=1e-4)


def test_kbest_returns_all_paths_when_k_exceeds_them_and_viterbi_is_the_first():
    crf = random_crf(2, 5)
    emissions, mask, lengths = batch(5, n=2, length=3, tags=2)
    got = crf.kbest(emissions, mask, 20)
    assert [len(paths) for paths in got] == [2 ** n for n in lengths]
    assert crf.viterbi(emissions, mask) == [paths[0] for paths in got]


@pytest.mark.parametrize("seed", range(3))
def test_viterbi_is_the_best_of_kbest_with_padding_and_ties(seed):
    crf = random_crf(4, seed)
    emissions, mask, _ = batch(seed, n=5, length=6, tags=4)
    assert crf.viterbi(emissions, mask) == [paths[0] for paths in crf.kbest(emissions, mask, 3)]
    with torch.no_grad():
        for p in crf.parameters():
            p.zero_()
    flat = torch.zeros_like(emissions)  # every path ties: both pick the same one
    assert crf.viterbi(flat, mask) == [paths[0] for paths in crf.kbest(flat, mask, 1)]


def test_kbest_ties_are_broken_deterministically():
    crf = CRF(3)
    with torch.no_grad():
        for p in crf.parameters():
            p.zero_()
    emissions, mask = torch.zeros(1, 3, 3), torch.ones(1, 3, dtype=torch.bool)
    first = crf.kbest(emissions, mask, 5)
    assert first == crf.kbest(emissions, mask, 5)
    assert len({tuple(p) for p, _ in first[0]}) == 5  # distinct paths, all scored 0
    assert all(s == 0.0 for _, s in first[0])


@pytest.mark.parametrize("seed", range(3))
def test_nll_is_log_partition_minus_path_score(seed):
    crf = random_crf(3, seed)
    emissions, mask, lengths = batch(seed)
    tags = torch.randint(0, 3, emissions.shape[:2])
    nll = crf.nll(emissions, tags, mask)
    for b, length in enumerate(lengths):
        scores = torch.tensor([s for _, s in brute_force(crf, emissions[b], length)])
        gold = crf.path_score(emissions[b : b + 1], tags[b : b + 1], mask[b : b + 1])
        assert nll[b].item() == pytest.approx((torch.logsumexp(scores, 0) - gold).item(), abs=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_marginals_sum_to_one_and_match_brute_force(seed):
    crf = random_crf(3, seed)
    emissions, mask, lengths = batch(seed)
    marginals = crf.marginals(emissions, mask)
    assert torch.allclose(marginals.sum(-1)[mask], torch.ones(int(mask.sum())), atol=1e-5)
    assert (marginals[~mask] == 0).all()
    for b, length in enumerate(lengths):
        paths = brute_force(crf, emissions[b], length)
        probs = torch.softmax(torch.tensor([s for _, s in paths]), 0)
        expected = torch.zeros(length, 3)
        for (path, _), p in zip(paths, probs):
            for t, tag in enumerate(path):
                expected[t, tag] += p
        assert torch.allclose(marginals[b, :length], expected, atol=1e-5)


def test_nll_gradient_is_finite_with_padding():
    crf = random_crf(4, 0)
    emissions, mask, _ = batch(0, tags=4)
    emissions.requires_grad_(True)
    crf.nll(emissions, torch.zeros(3, 4, dtype=torch.long), mask).sum().backward()
    assert torch.isfinite(emissions.grad).all()
    assert (emissions.grad[~mask] == 0).all()
