"""Engine overhead: seqkd's trainer running `supervised` vs a minimal hand-written torch loop.

Both train the same student from the same initial weights on the same batches (the same reader
and seed), with the same optimizer, schedule, clipping and label smoothing, in one process; runs
alternate to spread machine noise. The trainer's run includes everything it does for the user
(progress line, metrics.jsonl, TensorBoard, validation and checkpoint at the end).

    .venv/bin/python benchmarks/engine_overhead.py [--steps 150] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import Timer, quickstart
from seqkd.method import NoOptions
from seqkd.trainer import Trainer, build_optimizer, build_scheduler
from seqkd_plugins.supervised import Supervised


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
    method = Supervised(NoOptions(), task, model, [], cfg.label_smoothing)
    Trainer(method=method, task=task, student=model, config=cfg, stage_dir=folder,
            device=torch.device("cpu"), label="bench").run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
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
    h, o = tokens / statistics.median(hand), tokens / statistics.median(ours)
    print(f"\nstudent {stage.model_role} ({sum(p.numel() for p in init.parameters())/1e6:.2f}M params), "
          f"{args.steps} steps x {args.rounds} rounds, {torch.get_num_threads()} threads")
    print(f"median tokens/s: hand loop {h:.0f}, seqkd trainer {o:.0f}; ratio seqkd/hand = {o / h:.3f} (goal >= 0.97)")


if __name__ == "__main__":
    main()
