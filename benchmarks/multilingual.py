"""Multilingual distillation at pre-training vs at fine-tuning (Soltan et al., SustaiNLP 2021), over
seeds: English and zero-shot (de, fr, it, da) accuracy of three 2-layer students.

``recipes/multilingual/distil.yaml`` as it stands: the masked-LM teacher and its English fine-tuning
run once and are shared by every seed; per seed, (a) a student distilled during pre-training and
fine-tuned without KD, (b) a student pre-trained without KD and distilled during fine-tuning,
(c) the same student fine-tuned without KD (the baseline). Every student gets the same updates,
learning rate and start (teacher layers 0 and 2). Reported per stage: English test accuracy and
each language's zero-shot accuracy on the test synopses' translations, mean ± std over seeds, and
the pooled zero-shot accuracy (every translated test synopsis once); per seed, the pooled zero-shot
difference from (c), with a 95 % bootstrap interval over translated synopses (2,000 resamples) of
the seed-averaged difference. The paper's direction: (a) > (c) zero-shot, and (b) no better than
(c), possibly worse, on the languages fine-tuning never saw.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.multilingual [--seeds 1 2 3] [--out runs/bench-multilingual]
    .venv/bin/python -m benchmarks.multilingual --render   # the table from the results file only
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

RECIPE = REPO / "recipes" / "multilingual" / "distil.yaml"
RESULTS = REPO / "benchmarks" / "results" / "multilingual.json"
MARK = "multilingual"
PAGES = (REPO / "docs" / "benchmarks.md",)
SHARED = ("teacher_pretrain", "teacher_finetune")
CLASSIFIERS = ("teacher_finetune", "a_kd_pretraining", "b_kd_finetuning", "c_no_kd")
BASELINE = "c_no_kd"


def measure(seeds: list[int], out: Path) -> dict[str, Any]:
    runs = run_seeds(RECIPE, seeds, out, shared=set(SHARED))
    engine = Engine(runs.recipe)
    task = engine.task("sections")
    evaluation = runs.recipe.tasks["sections"].evaluation
    split, languages = evaluation.split, list(evaluation.languages)
    own = task.texts()[split]
    translated = [t for lang in languages for t in own if lang in t.translations]  # eval_inputs' order after the English

    def zero_shot_correct(stage_name: str) -> list[float]:
        lines = (engine.stage_dir(stage_name) / f"predictions.{split}.txt").read_text(encoding="utf-8").split("\n")
        return [100.0 * (p == t.label) for p, t in zip(lines[len(own) :], translated)]

    stages, per_sentence = {}, {}
    for name in CLASSIFIERS:
        reports = runs.reports[name]
        per_seed = []
        for seed, report in zip(seeds, reports):
            correct = zero_shot_correct(report.name)
            per_seed.append({"seed": seed, "en": report.metrics["accuracy"],
                             **{lang: report.metrics[f"accuracy_{lang}"] for lang in languages},
                             "zero_shot": round(statistics.mean(correct), 2)})
            per_sentence.setdefault(name, []).append(correct)
        stages[name] = {"method": reports[0].method, "parameters": reports[0].parameters, "seeds": per_seed}
    pretraining = {name: [{"seed": s, **{k: v for k, v in r.metrics.items() if k in ("accuracy", "perplexity")}}
                          for s, r in zip(seeds, runs.reports[name])]
                   for name in runs.reports if runs.recipe.stage(runs.reports[name][0].name).task == "mlm"}
    paired = {}
    for name in ("a_kd_pretraining", "b_kd_finetuning"):
        seed_mean = [statistics.mean(x) - statistics.mean(b) for x, b in zip(zip(*per_sentence[name]), zip(*per_sentence[BASELINE]))]
        paired[name] = {
            "per_seed": [round(a["zero_shot"] - b["zero_shot"], 2) for a, b in zip(stages[name]["seeds"], stages[BASELINE]["seeds"])],
            "zero_shot_ci95": [round(x, 2) for x in bootstrap(seed_mean)],
        }
    return {
        "recipe": str(RECIPE.relative_to(REPO)), "split": split, "languages": languages, "english": len(own),
        "translated": len(translated), "seeds": seeds, "date": datetime.date.today().isoformat(),
        "command": f"OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python -m benchmarks.multilingual --seeds {' '.join(map(str, seeds))}",
        "baseline": BASELINE, "stages": stages, "pretraining": pretraining, "paired": paired,
    }


def render(results: dict[str, Any]) -> str:
    languages = results["languages"]
    lines = [
        "| stage | method | en | " + " | ".join(languages) + " | zero-shot (pooled) | Δ zero-shot vs c per seed | Δ 95 % CI |",
        "|---|---|---|" + "---|" * len(languages) + "---|---|---|",
    ]
    for name, stage in results["stages"].items():
        cells = [mean_std([s[key] for s in stage["seeds"]]) for key in ("en", *languages, "zero_shot")]
        pair = results["paired"].get(name)
        delta = signed(pair["per_seed"]) if pair else ("(baseline)" if name == results["baseline"] else "")
        ci = interval(pair["zero_shot_ci95"]) if pair else ""
        lines.append(f"| {name} | `{stage['method']}` | " + " | ".join(cells) + f" | {delta} | {ci} |")
    pre = "; ".join(
        f"{name}: masked-token accuracy {mean_std([s['accuracy'] for s in seeds])} %, perplexity {mean_std([s['perplexity'] for s in seeds])}" for name, seeds in results["pretraining"].items()
    )
    lines += ["", (
        f"Accuracy (%) on {results['english']} English {results['split']} synopses and, zero-shot, on their translations "
        f"({results['translated']} in all); seeds {', '.join(map(str, results['seeds']))}; the teachers are one run. "
        f"Pre-training (valid descriptions): {pre}. {results['recipe']}; {results['date']}. "
        f"Command: `{results['command']}`; results file `{RESULTS.relative_to(REPO)}`."
    )]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-multilingual"))
    parser.add_argument("--render", action="store_true", help="only render the table from the results file")
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args.seeds, args.out), pages=PAGES)


if __name__ == "__main__":
    main()
