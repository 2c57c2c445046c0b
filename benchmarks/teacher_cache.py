"""Teacher-output cache: size per token, cached vs online word-KD step speed, seq-KD generation speed.

1. bytes per target token of the top-k cache (k = 8) vs a full-vocabulary fp16 row;
2. word-KD steps with the teacher's cached top-k vs the teacher run online, for a 6-6 teacher and a
   6-encoder/1-decoder student (d 256, the quickstart's data and vocabulary), same student
   initialisation and batches, alternating runs;
3. the teacher's beam-search throughput (sentences/s) when building a seq-KD corpus.

The cache and the timings do not depend on the teacher's weights, so an untrained teacher of the
right shape is used; the quality comparison comes from `seqkd run recipes/bible-en-es/seq-kd.yaml`.

    .venv/bin/python -m benchmarks.teacher_cache [--pairs 3000] [--steps 20] [--rounds 2]
    .venv/bin/python -m benchmarks.teacher_cache --render   # the table from the results file only
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
from seqkd.fileio import atomic_write_text
from seqkd.method import StageContext, Teacher
from seqkd.teacher_outputs import build_topk
from seqkd.trainer import Trainer
from seqkd_plugins.word_kd import WordKD, WordKDOptions

TEACHER = dict(encoder_layers=6, decoder_layers=6, encoder_dim=256, encoder_ffn_dim=1024, encoder_heads=4)
STUDENT = dict(encoder_layers=6, decoder_layers=1, encoder_dim=256, decoder_dim=256, encoder_ffn_dim=1024, encoder_heads=4)
RESULTS = REPO / "benchmarks" / "results" / "teacher_cache.json"
MARK = "teacher_cache"
PAGES = (REPO / "docs" / "benchmarks.md",)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        recipe, engine = quickstart(Path(tmp), f"task.data.max_train_pairs={args.pairs}")
        task = engine.task()
        schema = task.model_schema
        torch.manual_seed(0)
        teacher = task.build_model(schema(**TEACHER)).eval()
        student_init = task.build_model(schema(**STUDENT))
        context = StageContext(cache_dir=Path(tmp) / "cache", teacher_ids=["benchmark"], max_tokens=4096,
                               device=torch.device("cpu"), rebuild=False, log=lambda _: None, write_text=atomic_write_text)

        with Timer() as build:
            artifact = build_topk(task, Teacher.from_model(teacher), context, k=8, temperature=1.0)
        tokens = sum(int(artifact.shard(i).arrays["offsets"][-1]) for i in range(len(artifact.manifest["shards"])))
        per_token = artifact.nbytes() / tokens
        full_row = task.vocab_size * 2
        print(f"1. top-8 cache: {artifact.nbytes():,} bytes for {tokens:,} target tokens = {per_token:.1f} B/token "
              f"(goal <= 48); full fp16 row of V={task.vocab_size}: {full_row:,} B/token ({full_row / per_token:.0f}x larger); "
              f"built in {build.seconds:.1f} s")

        cfg = recipe.training.model_copy(update={
            "max_steps": args.steps, "log_every": args.steps, "validate_every": args.steps, "checkpoint_every": args.steps})
        seconds: dict[str, list[float]] = {"online": [], "cache": []}
        for r in range(args.rounds):
            for source in ("online", "cache") if r % 2 == 0 else ("cache", "online"):
                student = copy.deepcopy(student_init)
                method = WordKD(WordKDOptions(teacher_source=source), task, student, [Teacher.from_model(teacher)], cfg.label_smoothing)
                method.prepare(context)
                trainer = Trainer(method=method, task=task, student=student, config=cfg,
                                  stage_dir=Path(tmp) / f"{source}{r}", device=torch.device("cpu"), label=source)
                with Timer() as t:
                    trainer.run()
                seconds[source].append(t.seconds / args.steps)
            print(f"   round {r}: online {seconds['online'][-1]*1000:.0f} ms/step, cached {seconds['cache'][-1]*1000:.0f} ms/step")
        online, cached = statistics.median(seconds["online"]), statistics.median(seconds["cache"])
        print(f"2. word-KD step, 6-6 teacher ({sum(p.numel() for p in teacher.parameters())/1e6:.1f}M) -> 6-1 student "
              f"({sum(p.numel() for p in student_init.parameters())/1e6:.1f}M): online {online*1000:.0f} ms, "
              f"cached {cached*1000:.0f} ms; speed-up {online / cached:.2f}x (goal >= 2x)")

        n = min(args.generate, task.num_examples("train"))
        generation = {}
        for beam in (1, 4):
            with Timer() as t:
                task.generate(teacher, "train", 0, n, task.generation_schema(beam_size=beam, batch_size=128), nbest=1)
            generation[f"beam {beam}"] = round(n / t.seconds, 1)
            print(f"3. seq-KD generation, 6-6 teacher, beam {beam}: {generation[f'beam {beam}']} sentences/s ({n} sources)")
        return {
            "date": datetime.date.today().isoformat(), "threads": torch.get_num_threads(), "pairs": args.pairs,
            "steps": args.steps, "rounds": args.rounds, "vocabulary": task.vocab_size,
            "command": f"OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python -m benchmarks.teacher_cache --pairs {args.pairs} "
                       f"--steps {args.steps} --rounds {args.rounds}",
            "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
            "student_parameters": sum(p.numel() for p in student_init.parameters()),
            "cache_bytes": artifact.nbytes(), "cached_tokens": tokens, "cached_examples": artifact.num_items,
            "build_seconds": round(build.seconds, 1),
            "ms_per_step": {k: [round(1000 * v) for v in values] for k, values in seconds.items()},
            "generation_sentences_per_s": generation, "generated_sources": n,
        }


def render(results: dict[str, Any]) -> str:
    per_token = results["cache_bytes"] / results["cached_tokens"]
    full = 2 * results["vocabulary"]
    online, cached = (statistics.median(results["ms_per_step"][k]) for k in ("online", "cache"))
    gen = results["generation_sentences_per_s"]
    return "\n".join([
        "| figure | measured | goal |", "|---|---|---|",
        f"| top-8 cache size | **{per_token:.1f} bytes per target token** ({results['cache_bytes']:,} B for {results['cached_tokens']:,} tokens) | ≤ 48 |",
        f"| full-vocabulary fp16 row, for comparison | {full:,} bytes per token ({full / per_token:.0f}× larger) | |",
        f"| cache build (teacher forward over {results['cached_examples']:,} examples) | {results['build_seconds']} s | |",
        f"| word-KD step, online teacher | {online:,.0f} ms | |",
        f"| word-KD step, cached top-8 | {cached:,.0f} ms | |",
        f"| **speed-up of the cached teacher** | **{online / cached:.2f}×** | ≥ 2× |",
        *(f"| 6-6 teacher beam search, {beam} | {speed} sentences/s | |" for beam, speed in gen.items()),
        "",
        f"6-6 teacher ({results['teacher_parameters'] / 1e6:.1f} M), 6-1 student ({results['student_parameters'] / 1e6:.1f} M), "
        f"{results['pairs']:,} training pairs, {results['steps']} steps × {results['rounds']} alternating rounds, "
        f"{results['threads']} thread(s); generation over {results['generated_sources']} sources; {results['date']}. "
        f"Command: `{results['command']}`; results file `{RESULTS.relative_to(REPO)}`.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3000, help="training pairs cached and trained on")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--generate", type=int, default=300, help="sources decoded for the generation figure")
    parser.add_argument("--render", action="store_true", help="only render the table from the results file")
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args), pages=PAGES)


if __name__ == "__main__":
    main()
