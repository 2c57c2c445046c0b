"""The quickstart over seeds: the README's table as mean ± std, with paired differences.

The teacher is trained once (the recipe's seed) and shared; the baseline and word-KD students are
trained once per seed, so each seed's pair of students sees the same data order, initialisation
seed and teacher. Reported per stage: BLEU and chrF on the test verses, mean ± std over seeds;
for word-KD, the per-seed BLEU difference from the baseline of the same seed, with a 95 %
paired-bootstrap interval over test verses (corpus BLEU averaged over seeds).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.quickstart [--seeds 1 2 3] [--out runs/quickstart]
    .venv/bin/python -m benchmarks.quickstart --render   # tables from the results file only

It runs what ``seqkd run recipes/bible-en-es/quickstart.yaml --seeds 1,2,3 --shared teacher
--baseline baseline`` runs, in the quickstart's own folder, so the quickstart's teacher is reused.
Results go to ``benchmarks/results/quickstart.json``; the README's and docs/benchmarks.md's
tables are rendered from it, between ``<!-- quickstart -->`` markers.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import torch

from benchmarks.common import PAGES, QUICKSTART, REPO, publish
from benchmarks.seeds import interval, mean_std, paired_bleu_ci, signed
from seqkd.engine import Engine
from seqkd.seeds import run_seeds, summarise

RESULTS = REPO / "benchmarks" / "results" / "quickstart.json"
MARK = "quickstart"
TEACHER, BASELINE = "teacher", "baseline"


def measure(seeds: list[int], out: Path | None, recipe: Path = QUICKSTART, module: str = "quickstart") -> dict:
    runs = run_seeds(recipe, seeds, out, shared={TEACHER})
    summary = summarise(runs, baseline=BASELINE)
    engine = Engine(runs.recipe)
    task = engine.task()
    metrics = runs.reports[BASELINE][0].metrics
    split, count = metrics["split"], metrics["sentences"]

    def predictions(name: str) -> list[list[str]]:
        return [(engine.stage_dir(r.name) / f"predictions.{split}.txt").read_text(encoding="utf-8").split("\n")[:count] for r in runs.reports[name]]

    refs = task.references(split, count)
    for name, pair in summary["paired"].items():
        pair["bleu_ci95"] = [round(x, 2) for x in paired_bleu_ci(predictions(name), predictions(BASELINE), refs)]
    return {**summary, "recipe": str(recipe.relative_to(REPO)), "split": split, "sentences": count,
            "date": datetime.date.today().isoformat(),
            "command": f"OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python -m benchmarks.{module} --seeds {' '.join(map(str, seeds))}"}


def render(results: dict) -> str:
    return table(results, RESULTS)


def table(results: dict, results_path: Path) -> str:
    """A markdown table: BLEU and chrF mean ± std, and each student's paired difference from the baseline."""
    lines = [
        "| stage | method | params | seeds | BLEU | chrF | Δ BLEU vs baseline per seed | Δ BLEU 95 % CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, stage in results["stages"].items():
        cells = [mean_std([s[k] for s in stage["seeds"]]) for k in ("bleu", "chrf")]
        pair = results["paired"].get(name)
        delta = signed([d["bleu"] for d in pair["per_seed"]]) if pair else ("(baseline)" if name == BASELINE else "")
        ci = interval(pair["bleu_ci95"]) if pair else ""
        lines.append(f"| {name} | `{stage['method']}` | {stage['parameters'] / 1e6:.2f} M | {len(stage['seeds'])} | {' | '.join(cells)} | {delta} | {ci} |")
    lines += ["", (
        f"{results['sentences']} {results['split']} verses, beam 4; the teacher is trained once, the students per seed "
        f"(seeds {', '.join(map(str, results['seeds']))}; {results['date']}). `{results['command']}`; "
        f"results file: `{results_path.relative_to(REPO)}`."
    )]
    return "\n".join(lines)


def main(recipe: Path = QUICKSTART, results: Path = RESULTS, mark: str = MARK, pages: tuple[Path, ...] = PAGES,
         module: str = "quickstart", description: str = __doc__) -> None:
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: the recipe's, runs/quickstart)")
    parser.add_argument("--render", action="store_true", help="only render the tables from the results file")
    args = parser.parse_args()
    measured = None if args.render else measure(args.seeds, args.out, recipe, module)
    publish(results, lambda r: table(r, results), mark, measured, pages=pages)


if __name__ == "__main__":
    main()
