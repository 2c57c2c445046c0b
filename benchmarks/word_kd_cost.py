"""The price of the teacher: a `word_kd` step vs a `supervised` step for the quickstart student.

Same student initialisation, same batches, same process; the teacher is the quickstart's 3-3
teacher (its weights do not change the cost). Runs alternate to spread machine noise.

    .venv/bin/python benchmarks/word_kd_cost.py [--steps 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import Timer, quickstart
from seqkd.method import Teacher
from seqkd.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
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
    s, k = statistics.median(seconds["supervised"]), statistics.median(seconds["word_kd"])
    print(f"\nstudent {sum(p.numel() for p in init.parameters())/1e6:.2f}M params, "
          f"teacher {sum(p.numel() for p in teacher.parameters())/1e6:.2f}M params, {args.steps} steps x {args.rounds} rounds")
    print(f"median ms/step: supervised {s*1000:.0f}, word_kd {k*1000:.0f}; word_kd/supervised = {k / s:.2f}x")


if __name__ == "__main__":
    main()
