"""Entity F1 (mean ± std over seeds) of a NER recipe's stages, and their tagging speed vs the teacher.

Every stage, the teacher included, is trained once per seed (see ``benchmarks.seeds``). Tagging
speed is measured afterwards on the first seed's models, together (``alternating_speed``): each
tags the evaluation split; the median of the rounds is kept.

    .venv/bin/python -m benchmarks.ner_f1 [recipes/wnut-ner/small.yaml] [--seeds 1 2 3] [--out runs/bench-ner]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import REPO, Timer, alternating_speed
from benchmarks.seeds import mean_std, table
from seqkd.engine import Engine, load_trained_model
from seqkd.seeds import run_seeds


def _seconds(fn, *args) -> float:
    with Timer() as timer:
        fn(*args)
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, nargs="?", default=REPO / "recipes" / "wnut-ner" / "small.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-ner"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs = run_seeds(args.recipe, args.seeds, args.out)

    engine = Engine(runs.recipe)
    engine.task()
    split = runs.recipe.only_task().evaluation.split
    sentences = [s.tokens for s in engine.task().sentences()[split]]
    models = {
        name: load_trained_model(engine.task(), engine.stage_dir(reports[0].name) / "model.pt")[0]
        for name, reports in runs.reports.items()
    }
    speed = alternating_speed(models, lambda model: len(sentences) / _seconds(engine.task().tag, model, sentences), args.rounds)
    first = next(iter(speed.values()))

    rows = [["stage", "method", "params", "F1", "precision", "recall", "sent/s", "vs first"]]
    for name, reports in runs.reports.items():
        rows.append([
            name, reports[0].method, f"{reports[0].parameters / 1e6:.2f}M",
            mean_std(runs.values(name, "f1")), mean_std(runs.values(name, "precision")),
            mean_std(runs.values(name, "recall")), f"{speed[name]:.0f}", f"{speed[name] / first:.2f}x",
        ])
    print(f"{args.recipe}: entity F1 on the {split} split ({len(sentences)} sentences), seeds {args.seeds}")
    print(table(rows))


if __name__ == "__main__":
    main()
