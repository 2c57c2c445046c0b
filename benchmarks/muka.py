"""Knowledge amalgamation on the Debian sections: three MiniLM teachers, each fine-tuned on a third
of the 27 sections, into one 3-layer student over all of them, without gold labels (MUKA, Li et al.
2021), against vanilla amalgamation and a student trained on the gold labels (the upper bound).

``recipes/debian-sections/muka.yaml`` as it stands: its teachers are trained once and shared by
every seed; the three students run per seed with the same updates, learning rate and start (the
pretrained MiniLM cut to 3 layers). Reported: accuracy and macro-F1 on the union's test synopses,
mean ± std over seeds; each teacher's accuracy on its own sections' test synopses; and per seed
the accuracy difference from vanilla amalgamation, with a 95 % bootstrap interval over test
synopses (2,000 resamples) of the seed-averaged difference. The paper's direction: MUKA > vanilla,
both below the gold-label student.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.muka [--seeds 1 2 3] [--out runs/bench-muka]
    .venv/bin/python -m benchmarks.muka --render   # the table from the results file only
"""

from __future__ import annotations

import argparse
import datetime
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import REPO, publish
from benchmarks.seeds import bootstrap, interval, mean_std, signed
from seqkd.engine import Engine
from seqkd.seeds import run_seeds

RECIPE = REPO / "recipes" / "debian-sections" / "muka.yaml"
RESULTS = REPO / "benchmarks" / "results" / "muka.json"
MARK = "muka"
PAGES = (REPO / "docs" / "benchmarks.md", REPO / "README.md")
TEACHERS = ("teacher1", "teacher2", "teacher3")
BASELINE = "vanilla"


def measure(seeds: list[int], out: Path) -> dict[str, Any]:
    runs = run_seeds(RECIPE, seeds, out, shared=set(TEACHERS))
    engine = Engine(runs.recipe)
    split = runs.recipe.tasks["union"].evaluation.split
    gold = [t.label for t in engine.task("union").texts()[split]]

    def correct(stage_name: str) -> list[float]:
        lines = (engine.stage_dir(stage_name) / f"predictions.{split}.txt").read_text(encoding="utf-8").split("\n")
        return [100.0 * (p == g) for p, g in zip(lines, gold)]

    stages, per_sentence = {}, {}
    for name, reports in runs.reports.items():
        task = reports[0].task
        stages[name] = {
            "method": reports[0].method, "task": task, "labels": len(engine.task(task).labels),
            "options": runs.recipe.stage(reports[0].name).options.model_dump(mode="json"), "parameters": reports[0].parameters,
            "seeds": [{"seed": s, "accuracy": r.metrics["accuracy"], "macro_f1": r.metrics["macro_f1"]} for s, r in zip(seeds, reports)],
        }
        if name not in TEACHERS:
            per_sentence[name] = [correct(r.name) for r in reports]
    paired = {}
    for name in per_sentence:
        if name == BASELINE:
            continue
        seed_mean = [statistics.mean(x) - statistics.mean(b) for x, b in zip(zip(*per_sentence[name]), zip(*per_sentence[BASELINE]))]
        paired[name] = {
            "per_seed": [round(a["accuracy"] - b["accuracy"], 2) for a, b in zip(stages[name]["seeds"], stages[BASELINE]["seeds"])],
            "accuracy_ci95": [round(x, 2) for x in bootstrap(seed_mean)],
        }
    return {
        "recipe": str(RECIPE.relative_to(REPO)), "split": split, "sentences": len(gold), "seeds": seeds,
        "date": datetime.date.today().isoformat(),
        "command": f"OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python -m benchmarks.muka --seeds {' '.join(map(str, seeds))}",
        "baseline": BASELINE, "stages": stages, "paired": paired,
    }


def render(results: dict[str, Any]) -> str:
    lines = ["| stage | method | labels | trained on | accuracy | macro-F1 | Δ acc vs vanilla per seed | Δ acc 95 % CI |",
             "|---|---|---:|---|---|---|---|---|"]
    for name, stage in results["stages"].items():
        pair = results["paired"].get(name)
        delta = signed(pair["per_seed"]) if pair else ("(baseline)" if name == results["baseline"] else "")
        ci = interval(pair["accuracy_ci95"]) if pair else ""
        method = stage["method"] + (f" ({stage['options']['combine']})" if stage["method"] == "muka" else "")
        source = "gold labels of its sections" if name.startswith("teacher") else ("gold labels" if stage["method"] == "supervised" else "the three teachers' outputs")
        lines.append(
            f"| {name} | `{method}` | {stage['labels']} | {source} | {mean_std([s['accuracy'] for s in stage['seeds']])} "
            f"| {mean_std([s['macro_f1'] for s in stage['seeds']])} | {delta} | {ci} |"
        )
    lines += ["", (
        f"Teachers: all-MiniLM-L6-v2 fine-tuned on 9 sections each, scored on their own sections' {results['split']} synopses "
        f"(one run, shared by every seed). Students: MiniLM cut to 3 layers, scored on all {results['sentences']} "
        f"{results['split']} synopses; seeds {', '.join(map(str, results['seeds']))} ({results['recipe']}; {results['date']}). "
        f"Command: `{results['command']}`; results file `{RESULTS.relative_to(REPO)}`."
    )]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-muka"))
    parser.add_argument("--render", action="store_true", help="only render the table from the results file")
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args.seeds, args.out), pages=PAGES)


if __name__ == "__main__":
    main()
