"""The price of the teacher: a `word_kd` step vs a `supervised` step for the quickstart student.

Same student initialisation, same batches, same process; the teacher is the quickstart's 3-3
teacher (its weights do not change the cost). Runs alternate to spread machine noise.

    .venv/bin/python -m benchmarks.word_kd_cost [--steps 100] [--rounds 3]
    .venv/bin/python -m benchmarks.word_kd_cost --render   # the table from the results file only
"""

from __future__ import annotations

import argparse
import copy
import datetime
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import REPO, Timer, publish, quickstart
from seqkd.method import Teacher
from seqkd.trainer import Trainer

RESULTS = REPO / "benchmarks" / "results" / "word_kd_cost.json"
MARK = "word_kd_cost"
PAGES = (REPO / "docs" / "benchmarks.md",)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        recipe, engine = quickstart(Path(tmp), f"training.max_steps={args.steps}", f"training.log_every={args.steps}")
        stages = {s.name: s for s in recipe.stages}
        kd_stage, base_stage = stages["word_kd"], stages["baseline"]
        cfg = kd_stage.training.model_copy(update={"validate_every": args.steps, "checkpoint_every": args.steps})
        torch.manual_seed(cfg.seed)
        init = engine.task().build_model(kd_stage.model)
        teacher = engine.task().build_model(recipe.models["teacher"])
        seconds: dict[str, list[float]] = {"supervised": [], "word_kd": []}
        for r in range(args.rounds):
            for stage in (base_stage, kd_stage):
                student = copy.deepcopy(init)
                teachers = [Teacher.from_model(teacher)] if stage.teachers else []
                method = stage.method(stage.options, engine.task(), student, teachers, cfg.label_smoothing)
                trainer = Trainer(method=method, task=engine.task(), student=student, config=cfg,
                                  stage_dir=Path(tmp) / f"{stage.name}{r}", device=torch.device("cpu"), label=stage.name)
                with Timer() as t:
                    trainer.run()
                seconds[stage.method.name].append(t.seconds / args.steps)
            print(f"round {r}: supervised {seconds['supervised'][-1]*1000:.0f} ms/step, "
                  f"word_kd {seconds['word_kd'][-1]*1000:.0f} ms/step")
    return {
        "date": datetime.date.today().isoformat(), "threads": torch.get_num_threads(), "steps": args.steps, "rounds": args.rounds,
        "student_parameters": sum(p.numel() for p in init.parameters()), "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
        "command": f"OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python -m benchmarks.word_kd_cost --steps {args.steps} --rounds {args.rounds}",
        "ms_per_step": {name: [round(1000 * v, 1) for v in values] for name, values in seconds.items()},
    }


def render(results: dict[str, Any]) -> str:
    ms = {name: statistics.median(values) for name, values in results["ms_per_step"].items()}
    return "\n".join([
        "| method | median ms/step |", "|---|---|",
        f"| supervised | {ms['supervised']:.0f} |",
        f"| word_kd (online teacher) | {ms['word_kd']:.0f} |",
        f"| **word_kd / supervised** | **{ms['word_kd'] / ms['supervised']:.2f}×** |",
        "",
        f"Quickstart student ({results['student_parameters'] / 1e6:.2f} M) with the quickstart teacher "
        f"({results['teacher_parameters'] / 1e6:.2f} M); {results['steps']} steps × {results['rounds']} alternating rounds, "
        f"{results['threads']} thread(s); {results['date']}. Command: `{results['command']}`; results file "
        f"`{RESULTS.relative_to(REPO)}`.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--render", action="store_true", help="only render the table from the results file")
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args), pages=PAGES)


if __name__ == "__main__":
    main()
