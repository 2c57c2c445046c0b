"""Throughput of exact k-best Viterbi (k = 1, 4, 8) relative to plain Viterbi, on one CRF.

Both decoders get the same batches of random emissions shaped like WNUT tagging (21 BIO tags,
sentences of the given length, a ragged batch); the rounds alternate between them and the median
is kept, so machine noise hits all alike.

    .venv/bin/python -m benchmarks.crf_kbest [--tags 21] [--batch 64] [--length 30] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.common import Timer
from seqkd.tasks.ner.crf import CRF


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=21)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=30)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
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

    base = statistics.median(times["viterbi"])
    print(f"{args.tags} tags, {sentences} sentences of up to {args.length} tokens, torch threads {torch.get_num_threads()}")
    print(f"{'decoder':<12} {'sent/s':>9} {'vs viterbi':>10}")
    for name, values in times.items():
        seconds = statistics.median(values)
        print(f"{name:<12} {sentences / seconds:>9.0f} {base / seconds:>9.2f}x")


if __name__ == "__main__":
    main()
