"""ROUGE of noisy self-KD, self-KD and the ablations against the MLE baseline, over seeds.

Every stage, the teacher included, is trained once per seed (``benchmarks.seeds``); the teacher
is also the baseline (MLE, the students' architecture and number of updates), so each student is
compared with the model it was distilled from. Reported: ROUGE-1/2/L mean ± std over seeds, the
per-seed paired differences from the baseline, and a 95 % bootstrap interval (2,000 resamples of
the test documents, seeded) for the paired difference in ROUGE-L averaged over seeds.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.summarization_kd [--seeds 1 2 3] [--out runs/bench-summarization]
    .venv/bin/python -m benchmarks.summarization_kd --render   # tables from the results file only

Results go to ``benchmarks/results/summarization_kd.json``; the tables in docs/benchmarks.md and
the README are rendered from it, between ``<!-- summarization_kd -->`` markers.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
from pathlib import Path

from benchmarks.common import REPO, publish
from benchmarks.seeds import bootstrap, interval, mean_std, signed
from seqkd.engine import Engine
from seqkd.seeds import run_seeds
from seqkd.tasks.summarization.adapter import ROUGE_TYPES, document_rouge

RESULTS = REPO / "benchmarks" / "results" / "summarization_kd.json"
RECIPE = REPO / "recipes" / "debian-summaries" / "reproduction.yaml"
BASELINE = "teacher"
NAMES = {"rouge1": "R-1", "rouge2": "R-2", "rougeL": "R-L"}
MARK = "summarization_kd"


def measure(recipe: Path, seeds: list[int], out: Path, only: list[str] | None) -> dict:
    runs = run_seeds(recipe, seeds, out, stages=only)
    engine = Engine(runs.recipe)
    task = engine.task()
    split = runs.recipe.only_task().evaluation.split
    references = task.references(split, len(task.pairs()[split]))
    stages, per_document = {}, {}
    for name, reports in runs.reports.items():
        stages[name] = {"method": reports[0].method, "parameters": reports[0].parameters,
                        "seeds": [{"seed": s, **{k: r.metrics[k] for k in ROUGE_TYPES}} for s, r in zip(seeds, reports)]}
        per_document[name] = [
            [d["rougeL"] for d in document_rouge(
                (engine.stage_dir(r.name) / f"predictions.{split}.txt").read_text(encoding="utf-8").split("\n")[: len(references)], references)]
            for r in reports
        ]
    paired = {}
    for name in stages:
        if name == BASELINE:
            continue
        seed_mean = [statistics.mean(ds) - statistics.mean(bs) for ds, bs in zip(zip(*per_document[name]), zip(*per_document[BASELINE]))]
        paired[name] = {
            "per_seed": {k: [round(a[k] - b[k], 2) for a, b in zip(stages[name]["seeds"], stages[BASELINE]["seeds"])] for k in ROUGE_TYPES},
            "rougeL_ci95": [round(x, 2) for x in bootstrap(seed_mean)],
        }
    return {
        "recipe": str(recipe.relative_to(REPO)), "split": split, "documents": len(references), "seeds": seeds,
        "date": datetime.date.today().isoformat(),
        "command": f"OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.summarization_kd --seeds {' '.join(map(str, seeds))}"
                   + (f" --stages {' '.join(only)}" if only else ""),
        "baseline": BASELINE, "stages": stages, "paired": paired,
    }


def render(results: dict) -> str:
    """The markdown table: ROUGE mean ± std, and the paired difference from the baseline."""
    lines = [
        f"| stage | method | {' | '.join(NAMES.values())} | Δ R-L per seed | Δ R-L 95 % CI |",
        "|---|---|" + "---|" * (len(NAMES) + 2),
    ]
    for name, stage in results["stages"].items():
        cells = [mean_std([s[k] for s in stage["seeds"]]) for k in NAMES]
        pair = results["paired"].get(name)
        delta = signed(pair["per_seed"]["rougeL"]) if pair else "(baseline)"
        ci = interval(pair["rougeL_ci95"]) if pair else ""
        lines.append(f"| {name} | `{stage['method']}` | {' | '.join(cells)} | {delta} | {ci} |")
    lines.append("")
    lines.append(
        f"{results['documents']} {results['split']} documents, seeds {', '.join(map(str, results['seeds']))} "
        f"({results['recipe']}; {results['date']}). Results file: `{RESULTS.relative_to(REPO)}`."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, nargs="?", default=RECIPE)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-summarization"))
    parser.add_argument("--stages", nargs="+", help="only these stages of the recipe (default: all; keep the teacher)")
    parser.add_argument("--render", action="store_true", help="only render the tables from the results file")
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args.recipe.resolve(), args.seeds, args.out, args.stages))

if __name__ == "__main__":
    main()
