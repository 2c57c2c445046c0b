"""Throughput of exact k-best Viterbi (k = 1, 4, 8) relative to plain Viterbi, on one CRF.

Both decoders get the same batches of random emissions shaped like WNUT tagging (21 BIO tags,
sentences of the given length, a ragged batch); the rounds alternate between them and the median
is kept, so machine noise hits all alike.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.crf_kbest [--tags 21] [--batch 64] [--length 30] [--rounds 7]
    .venv/bin/python -m benchmarks.crf_kbest --render   # the table from the results file only
"""

from __future__ import annotations

import argparse
import datetime
import statistics
from typing import Any

import torch

from benchmarks.common import REPO, Timer, publish
from seqkd.tasks.ner.crf import CRF

RESULTS = REPO / "benchmarks" / "results" / "crf_kbest.json"
MARK = "crf_kbest"
PAGES = (REPO / "docs" / "benchmarks.md",)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    crf = CRF(args.tags)
    batches = []
    for _ in range(args.batches):
        emissions = torch.randn(args.batch, args.length, args.tags)
        lengths = torch.randint(args.length // 3, args.length + 1, (args.batch,))
        batches.append((emissions, torch.arange(args.length) < lengths.unsqueeze(1)))
    sentences = args.batch * args.batches

    decoders = {"viterbi": lambda e, m: crf.viterbi(e, m)}
    for k in (1, 4, 8):
        decoders[f"kbest k={k}"] = lambda e, m, k=k: crf.kbest(e, m, k)
    times: dict[str, list[float]] = {name: [] for name in decoders}
    for r in range(args.rounds):
        for name in (list(decoders) if r % 2 == 0 else list(reversed(decoders))):
            with Timer() as timer:
                for emissions, mask in batches:
                    decoders[name](emissions, mask)
            times[name].append(timer.seconds)

    return {
        "date": datetime.date.today().isoformat(), "threads": torch.get_num_threads(), "tags": args.tags,
        "batch": args.batch, "batches": args.batches, "length": args.length, "rounds": args.rounds,
        "command": f"OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python -m benchmarks.crf_kbest "
                   f"--tags {args.tags} --batch {args.batch} --length {args.length} --batches {args.batches} --rounds {args.rounds}",
        "sentences_per_s": {name: round(sentences / statistics.median(values), 1) for name, values in times.items()},
    }


def render(results: dict[str, Any]) -> str:
    speeds = results["sentences_per_s"]
    lines = ["| decoder | sentences/s | vs Viterbi |", "|---|---|---|"]
    for name, speed in speeds.items():
        label = "Viterbi (max-product, one back-pointer per tag)" if name == "viterbi" else name.replace("kbest k=", "k-best, k = ")
        lines.append(f"| {label} | {speed:,.0f} | {speed / speeds['viterbi']:.2f}× |")
    lines += ["", (
        f"One CRF over {results['tags']} tags, {results['batches']} batches of {results['batch']} random emission sequences of "
        f"{results['length'] // 3}–{results['length']} tokens; median of {results['rounds']} alternating rounds, "
        f"{results['threads']} thread(s); {results['date']}. Command: `{results['command']}`; results file "
        f"`{RESULTS.relative_to(REPO)}`."
    )]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=21)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=30)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--render", action="store_true", help="only render the table from the results file")
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args), pages=PAGES)


if __name__ == "__main__":
    main()
