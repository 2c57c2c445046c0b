"""Sequence-level KD and cached word-KD beside the quickstart's students, over seeds.

``recipes/bible-en-es/seq-kd.yaml`` is the quickstart plus two students: ``seq_kd`` (trained on the
teacher's beam-2 outputs over the training sources, built once into the teacher-output cache) and
``word_kd_cached`` (word-KD from the teacher's cached top-8 log-probabilities). It shares the
quickstart's folder, so the teacher and the baseline and word-KD students of each seed are reused
from ``benchmarks.quickstart``. Reported as there: BLEU and chrF mean ± std, and each student's
per-seed BLEU difference from the baseline of the same seed with a 95 % paired-bootstrap interval.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.seq_kd [--seeds 1 2 3] [--out runs/quickstart]
    .venv/bin/python -m benchmarks.seq_kd --render   # the table from the results file only
"""

from __future__ import annotations

from benchmarks import quickstart
from benchmarks.common import REPO

RECIPE = REPO / "recipes" / "bible-en-es" / "seq-kd.yaml"
RESULTS = REPO / "benchmarks" / "results" / "seq_kd.json"
MARK = "seq_kd"
PAGES = (REPO / "docs" / "benchmarks.md",)


def render(results: dict) -> str:
    return quickstart.table(results, RESULTS)


if __name__ == "__main__":
    quickstart.main(RECIPE, RESULTS, MARK, PAGES, module="seq_kd", description=__doc__)
