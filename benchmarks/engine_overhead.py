"""Engine overhead: seqkd's trainer running `supervised` vs a minimal hand-written torch loop.

Both train the same student from the same initial weights on the same batches (the same reader
and seed), with the same optimizer, schedule, clipping and label smoothing, in one process; runs
alternate to spread machine noise. The trainer's run includes everything it does for the user
(progress line, metrics.jsonl, TensorBoard, validation and checkpoint at the end).

    .venv/bin/python -m benchmarks.engine_overhead [--steps 300] [--rounds 4]
    .venv/bin/python -m benchmarks.engine_overhead --render   # the table from the results file only
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
from seqkd.trainer import Trainer, build_optimizer, build_scheduler
from seqkd_plugins.supervised import Supervised, SupervisedOptions

RESULTS = REPO / "benchmarks" / "results" / "engine_overhead.json"
MARK = "engine_overhead"
PAGES = (REPO / "docs" / "benchmarks.md",)
GOAL = 0.97


def hand_loop(task, model, cfg) -> int:
    """The smallest loop that does the same work per step."""
    opt = build_optimizer(list(model.parameters()), cfg)
    sched = build_scheduler(opt, cfg)
    batches = iter(task.train_reader(cfg.max_tokens, cfg.seed))
    model.train()
    tokens = 0
    for _ in range(cfg.max_steps):
        batch = next(batches)
        opt.zero_grad(set_to_none=True)
        loss, n = task.nll(task.forward(model, batch), cfg.label_smoothing)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()
        sched.step()
        tokens += n
    return tokens


def seqkd_loop(task, model, cfg, folder: Path) -> None:
    method = Supervised(SupervisedOptions(), task, model, [], cfg.label_smoothing)
    Trainer(method=method, task=task, student=model, config=cfg, stage_dir=folder,
            device=torch.device("cpu"), label="bench").run()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        recipe, engine = quickstart(Path(tmp), f"training.max_steps={args.steps}", f"training.log_every={args.steps}")
        stage = next(s for s in recipe.stages if s.name == "baseline")
        cfg = stage.training.model_copy(update={"validate_every": args.steps, "checkpoint_every": args.steps})
        torch.manual_seed(cfg.seed)
        init = engine.task().build_model(stage.model)
        hand_loop(engine.task(), copy.deepcopy(init), cfg.model_copy(update={"max_steps": 5}))  # warm-up
        hand: list[float] = []
        ours: list[float] = []
        for r in range(args.rounds):
            # alternate which loop goes first, so drift in machine speed hits both alike
            for which in (("hand", "seqkd") if r % 2 == 0 else ("seqkd", "hand")):
                with Timer() as t:
                    if which == "hand":
                        tokens = hand_loop(engine.task(), copy.deepcopy(init), cfg)
                    else:
                        seqkd_loop(engine.task(), copy.deepcopy(init), cfg, Path(tmp) / f"run{r}")
                (hand if which == "hand" else ours).append(t.seconds)
            print(f"round {r}: hand loop {hand[-1]:.1f} s, seqkd trainer {ours[-1]:.1f} s")
    return {
        "date": datetime.date.today().isoformat(), "threads": torch.get_num_threads(), "steps": args.steps, "rounds": args.rounds,
        "student_parameters": sum(p.numel() for p in init.parameters()),
        "command": f"OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python -m benchmarks.engine_overhead --steps {args.steps} --rounds {args.rounds}",
        "tokens_per_s": {"hand": [round(tokens / t) for t in hand], "seqkd": [round(tokens / t) for t in ours]},
    }


def render(results: dict[str, Any]) -> str:
    hand, ours = (statistics.median(results["tokens_per_s"][k]) for k in ("hand", "seqkd"))
    ratios = ", ".join(f"{o / h:.3f}" for o, h in zip(results["tokens_per_s"]["seqkd"], results["tokens_per_s"]["hand"]))
    return "\n".join([
        "| steps × rounds | hand loop tok/s | seqkd trainer tok/s | ratio (medians) | ratio per round |", "|---|---|---|---|---|",
        f"| {results['steps']} × {results['rounds']} | {hand:,.0f} | {ours:,.0f} | {ours / hand:.3f} | {ratios} |",
        "",
        f"Quickstart student ({results['student_parameters'] / 1e6:.2f} M), `supervised`; {results['threads']} thread(s); "
        f"{results['date']}. Goal: ratio ≥ {GOAL}. Command: `{results['command']}`; results file `{RESULTS.relative_to(REPO)}`.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--render", action="store_true", help="only render the table from the results file")
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args), pages=PAGES)


if __name__ == "__main__":
    main()
