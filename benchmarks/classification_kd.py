"""Debian sections: the MiniLM teacher vs 2- and 3-layer students by fine-tuning only, logit KD,
hidden_mse, distilbert and universal_kd; accuracy and macro-F1 mean ± std over seeds, parameters
and sentences/s.

Every student is the teacher's architecture cut to 2 or 3 layers (its first layers' pretrained
weights; ``distilbert`` re-initialises it from every other teacher layer), so the methods differ
only in their loss. The teacher is trained once and shared by every seed (``benchmarks.seeds``).
The results go to ``benchmarks/results/classification_kd.json`` and their table into
docs/benchmarks.md between the ``classification_kd`` markers, so the page shows what was measured.
Not yet a fair comparison, so no table is published: ``distilbert`` students start from the
fine-tuned teacher's layers and head, the others from pretrained MiniLM layers with a new head, and
150 updates barely train a new 27-way head (one seed: distilbert 48.8-53.0 % accuracy, the others
6.8-23.7 %, teacher 54.7 %). Give every student the same start before running it for a table.

    .venv/bin/python -m benchmarks.classification_kd [--seeds 1 2 3] [--student-steps 150] [--out runs/bench-classification]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO
from benchmarks.seeds import mean_std, run_seeds, table

RECIPE = REPO / "recipes" / "debian-sections" / "quick.yaml"
RESULTS = REPO / "benchmarks" / "results" / "classification_kd.json"
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- classification_kd:begin -->", "<!-- classification_kd:end -->"
INIT = {2: [0, 3], 3: [0, 2, 4]}  # every other teacher layer (DistilBERT's rule), for 2 and 3 of 6
METHODS = {  # stage prefix -> (method, options)
    "fine-tune": ("supervised", {}),
    "logit_kd": ("word_kd", {"alpha": 0.5, "temperature": 2.0}),
    "hidden_mse": ("hidden_mse", {"alpha": 0.5, "beta": 10.0, "temperature": 2.0}),
    "distilbert": ("distilbert", {"temperature": 2.0}),
    "universal_kd": ("universal_kd", {"alpha_kd": 1.0, "beta": 1.0, "temperature": 2.0}),
}


def benchmark_recipe(student_steps: int, out: Path) -> Path:
    """quick.yaml's task and teacher, with every method on 2- and 3-layer MiniLM students."""
    raw = yaml.safe_load(RECIPE.read_text())
    raw["task"]["data"]["corpus"] = str((RECIPE.parent / raw["task"]["data"]["corpus"]).resolve())
    minilm = raw["models"]["minilm"]
    raw["models"] = {"minilm": minilm, **{f"minilm{n}": {**minilm, "layers": n} for n in INIT}}
    stages = [raw["stages"][0]]  # the teacher
    for n, layers in INIT.items():
        for prefix, (method, options) in METHODS.items():
            stage: dict[str, Any] = {"name": f"{prefix}-{n}", "method": method, "model": f"minilm{n}",
                                     "training": {"max_steps": student_steps, "lr": 0.0002, "warmup_steps": 15}}
            if method != "supervised":
                stage["teacher"] = "teacher"
                stage["options"] = {**options, **({"init_layers": layers} if method == "distilbert" else {})}
            stages.append(stage)
    raw["stages"] = stages
    out.mkdir(parents=True, exist_ok=True)
    path = out / "benchmark.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def render(results: dict[str, Any]) -> str:
    rows = [["stage", "method", "layers", "params", "accuracy", "macro-F1", "sent/s", "vs teacher"]]
    teacher_speed = results["rows"][0]["sentences_per_second"]
    for row in results["rows"]:
        rows.append([
            row["stage"], row["method"], str(row["layers"]), f"{row['parameters'] / 1e6:.1f}M",
            mean_std(row["accuracy"]), mean_std(row["macro_f1"]),
            f"{row['sentences_per_second']:.0f}", f"{row['sentences_per_second'] / teacher_speed:.2f}x",
        ])
    return (f"`{results['command']}` ({results['split']} split, {results['sentences']} synopses; seeds {results['seeds']}; "
            f"students {results['student_steps']} steps)\n\n```\n{table(rows)}\n```")


def publish(results: dict[str, Any]) -> None:
    """Write the results file and replace the table between the markers in docs/benchmarks.md."""
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    text = DOC.read_text()
    block = f"{BEGIN}\n{render(results)}\n{END}"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n## Classification: MiniLM teacher, 2- and 3-layer students (debian-sections)\n\n{block}\n"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--student-steps", type=int, default=150)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-classification"))
    parser.add_argument("--render-only", action="store_true", help="re-render docs/benchmarks.md from the results file")
    args = parser.parse_args()
    if args.render_only:
        publish(json.loads(RESULTS.read_text()))
        return
    runs = run_seeds(benchmark_recipe(args.student_steps, args.out), args.seeds, args.out, shared={"teacher"})
    split = runs.recipe.only_task().evaluation.split
    results = {
        "command": "python -m benchmarks.classification_kd " + " ".join(f"--seeds {' '.join(map(str, args.seeds))} --student-steps {args.student_steps}".split()),
        "split": split, "seeds": args.seeds, "student_steps": args.student_steps,
        "sentences": runs.reports["teacher"][0].metrics["sentences"],
        "rows": [
            {"stage": name, "method": reports[0].method, "layers": 6 if name == "teacher" else int(name.rsplit("-", 1)[1]),
             "parameters": reports[0].parameters, "accuracy": runs.values(name, "accuracy"), "macro_f1": runs.values(name, "macro_f1"),
             "sentences_per_second": reports[0].metrics["sentences_per_second"]}
            for name, reports in runs.reports.items()
        ],
    }
    publish(results)
    print(render(results))


if __name__ == "__main__":
    main()
