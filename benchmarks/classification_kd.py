"""Debian sections: the MiniLM teacher vs 2- and 3-layer students by fine-tuning only, logit KD,
hidden_mse, distilbert and universal_kd; accuracy and macro-F1 mean ± std over seeds, parameters
and sentences/s.

Every student is the teacher's architecture cut to 2 or 3 layers and starts the same way, from the
fine-tuned teacher's embeddings, head and every other layer (``init: teacher`` with
``init_layers``, DistilBERT's start), so the methods differ only in their loss; every student gets
the same updates, learning rate and seed. The teacher is trained once and shared by every seed
(``benchmarks.seeds``). The results go to ``benchmarks/results/classification_kd.json`` and their
table into docs/benchmarks.md and the README between the ``classification_kd`` markers. Paired
differences are each student's accuracy minus the fine-tuned student of its depth and seed, with a
95 % bootstrap interval over test synopses (2,000 resamples) for the seed-averaged difference.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.classification_kd [--seeds 1 2 3] [--student-steps 150] [--out runs/bench-classification]
    .venv/bin/python -m benchmarks.classification_kd --render   # tables from the results file only
"""

from __future__ import annotations

import argparse
import datetime
import statistics
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO, Timer, alternating_speed, publish
from benchmarks.seeds import bootstrap, interval, mean_std, signed
from seqkd.engine import Engine, load_trained_model
from seqkd.seeds import run_seeds

RECIPE = REPO / "recipes" / "debian-sections" / "quick.yaml"
RESULTS = REPO / "benchmarks" / "results" / "classification_kd.json"
MARK = "classification_kd"
INIT = {2: [0, 3], 3: [0, 2, 4]}  # every other teacher layer (DistilBERT's rule), for 2 and 3 of 6
METHODS = {  # stage prefix -> (method, options); fixed before any run, the papers' or seqkd's defaults
    "fine-tune": ("supervised", {}),
    "logit_kd": ("word_kd", {"alpha": 0.5, "temperature": 2.0}),
    "hidden_mse": ("hidden_mse", {"alpha": 0.5, "beta": 10.0, "temperature": 2.0}),
    "distilbert": ("distilbert", {"temperature": 2.0}),
    "universal_kd": ("universal_kd", {"alpha_kd": 1.0, "beta": 1.0, "temperature": 2.0}),
}


def benchmark_recipe(student_steps: int, out: Path) -> Path:
    """quick.yaml's task and teacher, with every method on 2- and 3-layer students cut from it."""
    raw = yaml.safe_load(RECIPE.read_text())
    raw["task"]["data"]["corpus"] = str((RECIPE.parent / raw["task"]["data"]["corpus"]).resolve())
    minilm = raw["models"]["minilm"]
    raw["models"] = {"minilm": minilm, **{f"minilm{n}": {**minilm, "layers": n} for n in INIT}}
    stages = [raw["stages"][0]]  # the teacher
    for n, layers in INIT.items():
        for prefix, (method, options) in METHODS.items():
            stage: dict[str, Any] = {"name": f"{prefix}-{n}", "method": method, "model": f"minilm{n}",
                                     "init": "teacher", "init_layers": layers,
                                     "training": {"max_steps": student_steps, "lr": 0.0002, "warmup_steps": 15}}
            if method != "supervised":
                stage["teacher"] = "teacher"
                stage["options"] = options
            stages.append(stage)
    raw["stages"] = stages
    out.mkdir(parents=True, exist_ok=True)
    path = out / "benchmark.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def depth_speeds(engine: Engine, split: str, seed: int, rounds: int = 3) -> dict[int, float]:
    """Sentences a second classifying ``split`` for the teacher and one student of each depth
    (speed depends on the depth only), in alternating rounds in this process."""
    task = engine.task()
    inputs = task.eval_inputs(split, engine.recipe.only_task().evaluation)
    names = {6: "teacher", **{n: f"fine-tune-{n}-s{seed}" for n in INIT}}
    models = {n: load_trained_model(task, engine.stage_dir(name) / "model.pt")[0] for n, name in names.items()}

    def run(model: Any) -> float:
        with Timer() as t:
            task.classify(model, inputs)
        return len(inputs) / t.seconds

    return {n: round(v, 1) for n, v in alternating_speed(models, run, rounds).items()}


def measure(seeds: list[int], student_steps: int, out: Path) -> dict[str, Any]:
    runs = run_seeds(benchmark_recipe(student_steps, out), seeds, out, shared={"teacher"})
    engine = Engine(runs.recipe)
    split = runs.recipe.only_task().evaluation.split
    gold = [t.label for t in engine.task().texts()[split]]

    def correct(stage_name: str) -> list[float]:
        lines = (engine.stage_dir(stage_name) / f"predictions.{split}.txt").read_text(encoding="utf-8").split("\n")
        return [100.0 * (p == g) for p, g in zip(lines, gold)]

    speeds = depth_speeds(engine, split, seeds[0])
    stages, per_sentence = {}, {}
    for name, reports in runs.reports.items():
        layers = 6 if name == "teacher" else int(name.rsplit("-", 1)[1])
        stages[name] = {
            "method": reports[0].method, "layers": layers,
            "parameters": reports[0].parameters, "sentences_per_second": speeds[layers],
            "seeds": [{"seed": s, "accuracy": r.metrics["accuracy"], "macro_f1": r.metrics["macro_f1"]} for s, r in zip(seeds, reports)],
        }
        per_sentence[name] = [correct(r.name) for r in reports]
    paired = {}
    for name, stage in stages.items():
        base = f"fine-tune-{stage['layers']}"
        if name in ("teacher", base):
            continue
        seed_mean = [statistics.mean(x) - statistics.mean(b) for x, b in zip(zip(*per_sentence[name]), zip(*per_sentence[base]))]
        paired[name] = {
            "baseline": base,
            "per_seed": [round(a["accuracy"] - b["accuracy"], 2) for a, b in zip(stage["seeds"], stages[base]["seeds"])],
            "accuracy_ci95": [round(x, 2) for x in bootstrap(seed_mean)],
        }
    return {
        "recipe": str(RECIPE.relative_to(REPO)), "split": split, "sentences": len(gold), "seeds": seeds,
        "student_steps": student_steps, "date": datetime.date.today().isoformat(),
        "command": f"OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.classification_kd --seeds {' '.join(map(str, seeds))} --student-steps {student_steps}",
        "stages": stages, "paired": paired,
    }


def render(results: dict[str, Any]) -> str:
    """The markdown table: accuracy and macro-F1 mean ± std, speed, and the paired difference."""
    lines = ["| stage | method | layers | params | accuracy | macro-F1 | sent/s | Δ acc per seed | Δ acc 95 % CI |",
             "|---|---|---|---|---|---|---|---|---|"]
    teacher_speed = results["stages"]["teacher"]["sentences_per_second"]
    for name, stage in results["stages"].items():
        pair = results["paired"].get(name)
        delta = signed(pair["per_seed"]) if pair else ("(baseline)" if name != "teacher" else "")
        ci = interval(pair["accuracy_ci95"]) if pair else ""
        speed = f"{stage['sentences_per_second']:.0f} ({stage['sentences_per_second'] / teacher_speed:.1f}×)"
        lines.append(
            f"| {name} | `{stage['method']}` | {stage['layers']} | {stage['parameters'] / 1e6:.1f} M | "
            f"{mean_std([s['accuracy'] for s in stage['seeds']])} | {mean_std([s['macro_f1'] for s in stage['seeds']])} | "
            f"{speed} | {delta} | {ci} |"
        )
    lines += ["", (
        f"{results['sentences']} {results['split']} synopses, seeds {', '.join(map(str, results['seeds']))}, "
        f"students {results['student_steps']} updates ({results['recipe']}; {results['date']}). Speed: the teacher and a "
        "student of each depth classifying the test split, batch 128, median of 3 alternating rounds, one CPU thread. "
        f"Results file: `{RESULTS.relative_to(REPO)}`."
    )]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--student-steps", type=int, default=150)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-classification"))
    parser.add_argument("--render", action="store_true", help="only render the tables from the results file")
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args.seeds, args.student_steps, args.out))

if __name__ == "__main__":
    main()
