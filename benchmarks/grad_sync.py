"""Two-process training on the CPU: summing gradients during the backward pass (seqkd's default,
``SEQKD_GRADIENT_SYNC=overlap``) against summing them after it (``after_backward``).

Each round trains the same stage twice with ``seqkd run --nproc 2`` (gloo, one thread per process),
once per mode, in alternating order so that machine noise hits both alike; the data order and the
arithmetic are the same, so the runs differ only in when the all-reduces run. Throughput is the
target tokens per second of the training windows after the first (start-up and the first batches
excluded), summed over the windows; reported per mode as the median over rounds, and the ratio
overlap / after_backward of each round.

Two students of the Bible en-es translation task: the quickstart teacher's shape (3+3 layers, 192
wide) and a Transformer-base shape (6+6 layers, 512 wide, 2,048 FFN: ~44 M parameters, 176 MB of
gradients to sum per update), where the all-reduce is a larger share of a step.

    python -m benchmarks.grad_sync [--rounds 3] [--steps 30]
    python -m benchmarks.grad_sync --render
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO, publish

RESULTS = REPO / "benchmarks" / "results" / "grad_sync.json"
MARK = "grad_sync"
PAGES = (REPO / "docs" / "benchmarks.md",)
MODES = ("after_backward", "overlap")
MODELS = {
    "quickstart teacher (3+3 × 192)": {"encoder_layers": 3, "decoder_layers": 3, "encoder_dim": 192, "encoder_ffn_dim": 768, "encoder_heads": 4},
    "base (6+6 × 512)": {"encoder_layers": 6, "decoder_layers": 6, "encoder_dim": 512, "encoder_ffn_dim": 2048, "encoder_heads": 8},
}


def write_recipe(folder: Path, model: dict[str, Any], steps: int, max_tokens: int) -> Path:
    recipe = {
        "description": "gradient-sync benchmark",
        "task": {"name": "translation", "source_lang": "en", "target_lang": "es",
                 "data": {"corpus": str(REPO / "data" / "bible-en-es" / "bible-en-es.tsv.gz")},
                 "vocab_size": 2000, "max_seq_len": 48},
        "models": {"student": {**model, "dropout": 0.1}},
        "training": {"max_steps": steps, "max_tokens": max_tokens, "lr": 1e-3, "warmup_steps": 10, "log_every": 5,
                     "validate_every": 10_000, "checkpoint_every": 10_000},
        "output": {"dir": str(folder / "run")},
        "stages": [{"name": "student", "method": "supervised", "model": "student", "evaluate": False}],
    }
    path = folder / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def tokens_per_second(recipe: Path, mode: str) -> float:
    """Target tokens/s of one two-process run, over its logged windows after the first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEQKD_GRADIENT_SYNC": mode}
    proc = subprocess.run([sys.executable, "-m", "seqkd", "run", str(recipe), "--nproc", "2", "--force-stage", "student"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the {mode} run failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (recipe.parent / "run" / "student" / "metrics.jsonl").read_text().splitlines()]
    windows = [r["tokens_per_s"] for r in records if r["kind"] == "train"][1:]
    # each window holds log_every updates of the same batches in both modes: time-weighted mean rate
    return len(windows) / sum(1 / w for w in windows)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for name, model in MODELS.items():
        recipe = write_recipe(args.work / name.split()[0], model, args.steps, args.max_tokens)
        speeds: dict[str, list[float]] = {mode: [] for mode in MODES}
        for r in range(args.rounds):
            for mode in (MODES if r % 2 == 0 else tuple(reversed(MODES))):
                speeds[mode].append(round(tokens_per_second(recipe, mode), 1))
                print(f"{name} round {r + 1} {mode}: {speeds[mode][-1]} tok/s", flush=True)
        rows.append({"model": name, "tokens_per_s": speeds,
                     "ratio_per_round": [round(o / a, 3) for o, a in zip(speeds["overlap"], speeds["after_backward"])]})
    return {"date": str(date.today()), "machine": f"{os.cpu_count()} CPU cores, 2 processes × 1 thread, gloo",
            "steps": args.steps, "max_tokens": args.max_tokens, "rounds": args.rounds,
            "command": f"python -m benchmarks.grad_sync --rounds {args.rounds} --steps {args.steps}", "rows": rows}


def render(results: dict[str, Any]) -> str:
    lines = [
        "| student | tok/s, sum after backward | tok/s, sum during backward | overlap / after, per round |",
        "|---|---:|---:|---|",
    ]
    for row in results["rows"]:
        after, overlap = (statistics.median(row["tokens_per_s"][m]) for m in MODES)
        ratios = ", ".join(f"{x:.2f}×" for x in row["ratio_per_round"])
        lines.append(f"| {row['model']} | {after:,.0f} | {overlap:,.0f} | {ratios} |")
    lines += ["", f"*{results['machine']}; {results['steps']} updates of {results['max_tokens']} target tokens per process, "
              f"the first window left out; median of {results['rounds']} alternating rounds; {results['date']}. "
              f"Command: `{results['command']}`; results file `{RESULTS.relative_to(REPO)}`.*"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render", action="store_true", help="only re-render the table from the results file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--work", type=Path, default=Path("/tmp/seqkd-grad-sync"))
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args), pages=PAGES)


if __name__ == "__main__":
    main()
