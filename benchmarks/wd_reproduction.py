"""Weight distillation vs KD at equal size: BLEU / chrF (mean ± std over seeds), size and decode speed.

Runs recipes/bible-en-es/wd.yaml with every student stage once per seed and the teacher once (see
``benchmarks.seeds``); the run folder makes it resumable across sessions. Decode speed (sentences/s,
the recipe's beam) is measured afterwards for the teacher and one model of each student shape,
together, in alternating rounds. Then the paper's claims are checked at this scale.

    .venv/bin/python -m benchmarks.wd_reproduction [--seeds 1 2 3] [--out runs/bench-wd] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.common import REPO, alternating_speed, translation_speed
from benchmarks.seeds import mean_std, table
from seqkd.engine import Engine, load_trained_model
from seqkd.seeds import run_seeds

RECIPE = REPO / "recipes" / "bible-en-es" / "wd.yaml"
SIZES = ("tiny", "small")
METHODS = ("baseline", "word_kd", "seq_kd", "wd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-wd"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs = run_seeds(RECIPE, args.seeds, args.out, shared={"teacher"})

    engine = Engine(runs.recipe)
    engine.task()
    evaluation = runs.recipe.only_task().evaluation
    sources = [p.source for p in engine.task().pairs()[evaluation.split][: evaluation.max_sentences]]
    shapes = {"teacher": "teacher", **{size: f"{size}_baseline" for size in SIZES}}
    models = {
        shape: load_trained_model(engine.task(), engine.stage_dir(runs.reports[stage][0].name) / "model.pt")[0]
        for shape, stage in shapes.items()
    }
    speed = alternating_speed(models, translation_speed(engine.task(), sources, evaluation), args.rounds)

    def mean(stage: str, metric: str) -> float:
        return statistics.mean(runs.values(stage, metric))

    rows = [["stage", "method", "params", "BLEU", "chrF", "sent/s", "vs teacher"]]
    for stage, reports in runs.reports.items():
        shape = "teacher" if stage == "teacher" else stage.split("_")[0]
        rows.append([
            stage, reports[0].method, f"{reports[0].parameters / 1e6:.2f}M", mean_std(runs.values(stage, "bleu")),
            mean_std(runs.values(stage, "chrf")), f"{speed[shape]:.1f}", f"{speed[shape] / speed['teacher']:.2f}x",
        ])
    print(f"{RECIPE.relative_to(REPO)}: {len(sources)} {evaluation.split} sentences, beam {evaluation.beam_size}, "
          f"seeds {args.seeds} (teacher: one run)")
    print(table(rows))
    print()
    teacher_bleu = mean("teacher", "bleu")
    for size in SIZES:
        best_kd = max(("word_kd", "seq_kd"), key=lambda m: mean(f"{size}_{m}", "bleu"))
        wd = mean(f"{size}_wd", "bleu")
        print(f"{size.upper()}: WD - best KD ({best_kd}) = {wd - mean(f'{size}_{best_kd}', 'bleu'):+.2f} BLEU "
              f"(paper: +0.56 to +1.82); WD - teacher = {wd - teacher_bleu:+.2f} BLEU "
              f"(paper: TINY -0.35 to -0.75, SMALL -0.01 to +1.5); decodes {speed[size] / speed['teacher']:.2f}x "
              "the teacher's speed (paper: 1.88-2.94x)")


if __name__ == "__main__":
    main()
