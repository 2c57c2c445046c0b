"""Helpers the benchmarks share for per-seed results (runs come from ``seqkd.seeds.run_seeds``,
what ``seqkd run --seeds`` runs): mean ± std cells, plain tables and paired bootstrap intervals."""

from __future__ import annotations

import random
import statistics

import numpy as np
import sacrebleu


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def signed(values: list[float]) -> str:
    """Per-seed differences as one cell: ``+0.72, -0.10, +1.26``."""
    return ", ".join(f"{d:+.2f}" for d in values)


def interval(bounds: list[float]) -> str:
    """A confidence interval as one cell: ``[+0.59, +1.27]``."""
    return "[{:+.2f}, {:+.2f}]".format(*bounds)


def table(rows: list[list[str]]) -> str:
    """A plain left-aligned text table; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def bootstrap(differences: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the mean of ``differences`` resampled with replacement."""
    rng = random.Random(seed)
    n = len(differences)
    means = sorted(sum(differences[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def paired_bleu_ci(hyps: list[list[str]], base: list[list[str]], refs: list[str], resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of mean-over-seeds corpus BLEU(hyps) − BLEU(base), resampling test sentences."""
    bleu = sacrebleu.metrics.BLEU()
    stats = [[np.array(bleu._extract_corpus_statistics(h, [refs])) for h in runs] for runs in (hyps, base)]
    rng = random.Random(seed)
    n = len(refs)
    deltas = []
    for _ in range(resamples):
        pick = [rng.randrange(n) for _ in range(n)]
        score = [[bleu._compute_score_from_stats(list(s[pick].sum(0))).score for s in runs] for runs in stats]
        deltas.append(statistics.mean(score[0]) - statistics.mean(score[1]))
    deltas.sort()
    return deltas[int(0.025 * resamples)], deltas[int(0.975 * resamples) - 1]
