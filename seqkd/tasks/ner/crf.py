"""A batched linear-chain CRF: likelihood, Viterbi, exact k-best Viterbi and marginals.

Written here rather than taken from a library because k-best decoding and marginals are the core of
the ``kbest_crf`` method and no maintained CRF package offers exact k-best paths.

Shapes: emissions ``(N, T, K)``, tags ``(N, T)``, mask ``(N, T)`` bool with real positions first
(each row is a prefix of ones; every row has at least one). A path's score is
``start[y_0] + sum_t emit[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_last]``.
"""

from __future__ import annotations

import torch
from torch import nn


def top_k(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries along the last axis and their indices, best first, ties to the
    lower index.

    k rounds of ``argmax`` (which returns the first maximum): exact and deterministic, without
    sorting the whole axis. Once the finite entries run out the values are -inf, which callers
    read as "no path".
    """
    values = values.clone()
    top, picks = [], []
    for _ in range(k):
        index = values.argmax(-1, keepdim=True)
        top.append(values.gather(-1, index))
        picks.append(index)
        values.scatter_(-1, index, float("-inf"))
    return torch.cat(top, -1), torch.cat(picks, -1)


class CRF(nn.Module):
    """Transition, start and end scores of a linear chain over ``num_tags`` tags."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))  # [from, to]
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))

    # -- scores and likelihood ----------------------------------------------------------------

    def path_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The unnormalised score of ``tags`` for each row, ``(N,)``."""
        maskf = mask.to(emissions.dtype)
        emit = emissions.gather(-1, tags.unsqueeze(-1)).squeeze(-1)  # (N, T)
        score = self.start[tags[:, 0]] + (emit * maskf).sum(1)
        trans = self.transitions[tags[:, :-1], tags[:, 1:]]  # (N, T-1)
        score = score + (trans * maskf[:, 1:]).sum(1)
        last = tags.gather(1, (mask.long().sum(1) - 1).unsqueeze(1)).squeeze(1)
        return score + self.end[last]

    def _scaled(self, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transition, start and end scores divided by ``temperature`` (a softer distribution)."""
        return self.transitions / temperature, self.start / temperature, self.end / temperature

    def _alphas(self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> list[torch.Tensor]:
        """Forward log-scores alpha_t (N, K), carried unchanged through padding."""
        trans, start, _ = self._scaled(temperature)
        emissions = emissions / temperature
        alpha = start + emissions[:, 0]
        alphas = [alpha]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], step, alpha)
            alphas.append(alpha)
        return alphas

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """log Z(x) for each row by the forward algorithm, ``(N,)``; all scores divided by ``temperature``."""
        return torch.logsumexp(self._alphas(emissions, mask, temperature)[-1] + self.end / temperature, dim=1)

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-log p(tags | x) for each row, ``(N,)``."""
        return self.log_partition(emissions, mask) - self.path_score(emissions, tags, mask)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """p(y_t = k | x) by forward-backward, ``(N, T, K)``; zero at padding."""
        return self.log_marginals(emissions, mask, temperature).exp() * mask.unsqueeze(-1).to(emissions.dtype)

    def log_marginals(self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """log p(y_t = k | x), ``(N, T, K)``; kept in log space so KL losses stay finite. Padding rows
        hold the last real position's values (callers mask them)."""
        n, length, k = emissions.shape
        trans, _, end = self._scaled(temperature)
        alphas = self._alphas(emissions, mask, temperature)
        emissions = emissions / temperature
        log_z = torch.logsumexp(alphas[-1] + end, dim=1)
        beta = end.expand(n, k)
        betas = [beta] * length
        for t in range(length - 2, -1, -1):
            step = torch.logsumexp(trans + (emissions[:, t + 1] + beta).unsqueeze(1), dim=2)
            # at the last real position (t+1 is padding) beta stays the end scores
            beta = torch.where(mask[:, t + 1 : t + 2], step, beta)
            betas[t] = beta
        return torch.stack(alphas, 1) + torch.stack(betas, 1) - log_z[:, None, None]

    # -- decoding -----------------------------------------------------------------------------

    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[tuple[list[int], float]]:
        """The best path of each row and its score: max-product with one back-pointer per tag.

        This is what tagging runs, so it skips ``kbest``'s k-way selection; ties go to the lower previous
        tag (``max`` returns the first maximum), the same path ``kbest(..., 1)`` returns.
        """
        emissions = emissions.float()
        trans, start, end = self.transitions.float(), self.start.float(), self.end.float()
        n, length, _ = emissions.shape
        score = start + emissions[:, 0]
        back = []
        for t in range(1, length):
            best, prev = (score.unsqueeze(2) + trans).max(dim=1)  # over the previous tag
            active = mask[:, t : t + 1]
            score = torch.where(active, best + emissions[:, t], score)
            # through padding a tag points back to itself, so the backtrace passes it unchanged
            back.append(torch.where(active, prev, torch.arange(prev.shape[1], device=prev.device)))
        final, tag = (score + end).max(dim=1)
        path = [tag]
        for pointers in reversed(back):
            tag = pointers.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        tags = torch.stack(path[::-1], 1).tolist()
        lengths = mask.long().sum(1).tolist()
        return [(row[:size], value) for row, size, value in zip(tags, lengths, final.tolist())]

    @torch.no_grad()
    def kbest(self, emissions: torch.Tensor, mask: torch.Tensor, k: int) -> list[list[tuple[list[int], float]]]:
        """The exact ``k`` highest-scoring paths of each row (fewer if fewer exist), best first.

        At every position each tag keeps its ``k`` best partial paths ending there; a path's
        candidates at the next position are all (previous tag, rank) pairs, so the top ``k`` of them
        are exact. Ties are broken towards the lower (previous tag, rank) index, which makes the
        order deterministic (``top_k``).
        """
        emissions = emissions.float()
        trans, start, end = self.transitions.float(), self.start.float(), self.end.float()
        n, length, tags = emissions.shape
        lengths = mask.long().sum(1).tolist()
        # scores[b, tag, r]: r-th best partial path ending in tag; -inf where fewer exist
        scores = torch.full((n, tags, k), float("-inf"), device=emissions.device)
        scores[:, :, 0] = start + emissions[:, 0]
        back: list[tuple[torch.Tensor, torch.Tensor]] = []  # per position: (prev tag, prev rank) (N, K, k)
        for t in range(1, length):
            cand = scores.unsqueeze(2) + trans[None, :, :, None]  # (N, prev, cur, rank)
            cand = cand.permute(0, 2, 1, 3).reshape(n, tags, tags * k)  # (N, cur, prev*rank)
            best, order = top_k(cand, k)
            best = best + emissions[:, t].unsqueeze(-1)
            active = mask[:, t].view(n, 1, 1)
            scores = torch.where(active, best, scores)
            back.append((order // k, order % k))
        # the k best complete paths of each row, then one batched backtrace for all of them
        final = (scores + end.view(1, tags, 1)).reshape(n, tags * k)
        values, order = top_k(final, k)  # (N, k)
        tag, rank = order // k, order % k
        path = [tag]
        for t in range(length - 1, 0, -1):
            prev_tag, prev_rank = back[t - 1]
            flat = (tag * k + rank)
            moved_tag = prev_tag.reshape(n, tags * k).gather(1, flat)
            moved_rank = prev_rank.reshape(n, tags * k).gather(1, flat)
            active = mask[:, t : t + 1]  # past a row's end the pointers are not followed
            tag, rank = torch.where(active, moved_tag, tag), torch.where(active, moved_rank, rank)
            path.append(tag)
        # reversed, a row of length L has its tags at positions 0..L-1 (then copies of the last)
        paths = torch.stack(path[::-1], 2).tolist()  # (N, k, T)
        return [
            [(paths[b][i][:size], value) for i, value in enumerate(values[b].tolist()) if value != float("-inf")]
            for b, size in enumerate(lengths)
        ]
