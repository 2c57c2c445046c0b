"""Training precision on the CPU: fp32 vs bf16 (``training.precision``) step time for the quickstart.

Two workloads: the quickstart's 3-3 teacher trained with ``supervised``, and the quickstart student
trained with ``word_kd`` from a teacher of that shape (its untrained weights: they do not change
the cost), whose forward runs in the same precision under inference mode. Each run is seqkd's
trainer from the same initial weights on the same batches; the step time is its logged window
(every step, none of the validation or checkpoint at the end). Runs alternate fp32 and bf16 in
one process, after one short warm-up run of each; the figures are medians over the rounds. The
results go to ``benchmarks/results/precision.json`` and their table into docs/benchmarks.md
between the ``precision`` markers.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.precision [--steps 30] [--rounds 3] [--workloads teacher word_kd]
    .venv/bin/python -m benchmarks.precision --render   # the table from the results file only
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import REPO, quickstart, write_between_markers
from seqkd.fileio import atomic_write_text
from seqkd.method import Teacher
from seqkd.trainer import Trainer

RESULTS = REPO / "benchmarks" / "results" / "precision.json"
MARK = "precision"
PAGES = (REPO / "docs" / "benchmarks.md",)  # published on the benchmarks page only
PRECISIONS = ("fp32", "bf16")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def train(recipe, engine, stage_name: str, init: torch.nn.Module, teacher: torch.nn.Module, precision: str,
          steps: int, folder: Path) -> dict[str, float]:
    """One trainer run; its ms per step and final training loss, from the one logged window."""
    stage = recipe.stage(stage_name)
    cfg = stage.training.model_copy(update={
        "max_steps": steps, "log_every": steps, "validate_every": steps, "checkpoint_every": steps, "precision": precision,
    })
    student = copy.deepcopy(init)
    teachers = [Teacher.from_model(copy.deepcopy(teacher))] if stage.teachers else []  # a Teacher freezes its model
    method = stage.method(stage.options, engine.task(), student, teachers, cfg.label_smoothing)
    trainer = Trainer(method=method, task=engine.task(), student=student, config=cfg, stage_dir=folder,
                      device=torch.device("cpu"), label=f"{stage_name}-{precision}")
    trainer.validate = lambda batches: 0.0  # the end-of-run validation is not measured; skip its cost
    trainer.run()
    [record] = [r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    targets = sum(b.num_target_elements for _, b in zip(range(steps), engine.task().train_reader(cfg.max_tokens, cfg.seed)))
    return {"ms_per_step": 1000 * targets / record["tokens_per_s"] / steps, "tokens_per_s": record["tokens_per_s"], "loss": record["loss"]}


def measure(steps: int, rounds: int, names: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        recipe, engine = quickstart(Path(tmp))
        torch.manual_seed(1)
        models = {role: engine.task().build_model(recipe.models[role]) for role in ("teacher", "student")}
        workloads = {"teacher": ("teacher", models["teacher"]), "word_kd": ("word_kd", models["student"])}
        workloads = {name: workloads[name] for name in names}
        runs: dict[str, dict[str, list[dict[str, float]]]] = {w: {p: [] for p in PRECISIONS} for w in workloads}
        n = 0
        for name, (stage, init) in workloads.items():  # warm-up: first use of each precision's kernels
            for precision in PRECISIONS:
                train(recipe, engine, stage, init, models["teacher"], precision, 3, Path(tmp) / f"run{(n := n + 1)}")
        for r in range(rounds):
            for name, (stage, init) in workloads.items():
                for precision in (PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]):
                    run = train(recipe, engine, stage, init, models["teacher"], precision, steps, Path(tmp) / f"run{(n := n + 1)}")
                    runs[name][precision].append(run)
                    print(f"round {r}: {name} {precision}: {run['ms_per_step']:.0f} ms/step, loss {run['loss']:.3f}", flush=True)
        params = {role: sum(p.numel() for p in m.parameters()) for role, m in models.items()}
    return {
        "date": datetime.date.today().isoformat(), "cpu": cpu_name(), "threads": torch.get_num_threads(),
        "torch": torch.__version__.split("+")[0], "steps": steps, "rounds": rounds,
        "max_tokens": recipe.stage("teacher").training.max_tokens, "parameters": params,
        "workloads": {
            name: {p: {"ms_per_step": statistics.median(x["ms_per_step"] for x in runs[name][p]),
                       "loss": runs[name][p][0]["loss"]} for p in PRECISIONS}
            for name in workloads
        },
    }


def render(results: dict[str, Any]) -> str:
    labels = {
        "teacher": f"teacher 3-3 d192 (`supervised`, {results['parameters']['teacher'] / 1e6:.1f} M)",
        "word_kd": f"student 2-1 d128 (`word_kd`, {results['parameters']['student'] / 1e6:.1f} M, teacher forward too)",
    }
    lines = ["| workload | fp32 ms/step | bf16 ms/step | bf16 / fp32 time | mean training loss: fp32, bf16 |", "|---|---|---|---|---|"]
    for name, w in results["workloads"].items():
        fp32, bf16 = w["fp32"], w["bf16"]
        lines.append(f"| {labels[name]} | {fp32['ms_per_step']:.0f} | {bf16['ms_per_step']:.0f} | "
                     f"{bf16['ms_per_step'] / fp32['ms_per_step']:.2f}× | {fp32['loss']:.3f}, {bf16['loss']:.3f} |")
    lines += ["", (
        f"{results['steps']} updates of up to {results['max_tokens']} target tokens per run, median of {results['rounds']} "
        f"alternating rounds; {results['cpu']}, {results['threads']} threads, torch {results['torch']} ({results['date']}). "
        f"Results file: `{RESULTS.relative_to(REPO)}`."
    )]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", choices=["teacher", "word_kd"], default=["teacher", "word_kd"])
    parser.add_argument("--render", action="store_true", help="only render the table from the results file")
    args = parser.parse_args()
    if not args.render:
        atomic_write_text(RESULTS, json.dumps(measure(args.steps, args.rounds, args.workloads), indent=1) + "\n")
    table = render(json.loads(RESULTS.read_text(encoding="utf-8")))
    print(table)
    for page in PAGES:
        write_between_markers(page, MARK, table)


if __name__ == "__main__":
    main()
