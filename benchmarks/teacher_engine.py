"""The teacher's n-best cache on CTranslate2: how fast a seq-KD teacher decodes the training
sources with ``engine: pytorch`` (fairseq2's beam search), ``ctranslate2`` (float32) and
``ctranslate2_int8``, and how far the cached hypotheses agree.

The teacher of a finished quickstart run (``runs/quickstart/teacher``) decodes the first
``--sentences`` training sources with ``task.generate``, the call the n-best cache's shards make,
beam 4 and the recipe's length limits, keeping 4 hypotheses. Rounds alternate the order of the
engines in one process; the median sentences/s is kept; the CTranslate2 conversion (once per
teacher) is timed apart. Agreement with fairseq2's lists: the best hypothesis, on all sources and
on those whose hypotheses stay under the length limit (at the limit fairseq2 forces an EOS and
counts its probability, CTranslate2 stops without one, so the two rank such hypotheses
differently), and the whole 4-best list. BLEU of the best hypotheses against the references says
what a seq-KD student would be trained on.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.teacher_engine [--run runs/quickstart] [--sentences 1024]
    .venv/bin/python -m benchmarks.teacher_engine --render
"""

from __future__ import annotations

import argparse
import datetime
import statistics
from pathlib import Path
from typing import Any

import sacrebleu
import torch

from benchmarks.common import QUICKSTART, REPO, Timer, publish
from seqkd.engine import Engine, load_trained_model
from seqkd.recipe import load_recipe

RESULTS = REPO / "benchmarks" / "results" / "teacher_engine.json"
MARK = "teacher_engine"
PAGES = (REPO / "docs" / "benchmarks.md",)
ENGINES = ("pytorch", "ctranslate2", "ctranslate2_int8")
BEAM = NBEST = 4


def measure(run: Path, sentences: int, rounds: int) -> dict[str, Any]:
    from seqkd.tasks.seq2seq import ctranslate2_search
    from seqkd.tasks.seq2seq.export import max_decoding_length

    engine = Engine(load_recipe(QUICKSTART, [f"output.dir={run}"]))
    task = engine.task()
    model, _ = load_trained_model(task, engine.stage_dir("teacher") / "model.pt")
    settings = {e: task.generation_schema(beam_size=BEAM, engine=e) for e in ENGINES}
    sentences = min(sentences, task.num_examples("train"))
    conversion = {}
    for e in ENGINES[1:]:
        ctranslate2_search._loaded.clear()
        with Timer() as t:
            task.generate(model, "train", 0, 1, settings[e], NBEST)
        conversion[e] = round(t.seconds, 2)
    speeds: dict[str, list[float]] = {e: [] for e in ENGINES}
    found: dict[str, Any] = {}
    for r in range(rounds):
        for e in (ENGINES if r % 2 == 0 else tuple(reversed(ENGINES))):
            with Timer() as t:
                found[e] = task.generate(model, "train", 0, sentences, settings[e], NBEST)
            speeds[e].append(round(sentences / t.seconds, 1))
            print(f"round {r + 1} {e}: {speeds[e][-1]} sentences/s", flush=True)
    sources = [task._examples("train")[i]["source"] for i in range(sentences)]
    caps = [max_decoding_length(settings["pytorch"], len(s) - 1, task._positions) for s in sources]
    references = task.target_texts("train", 0, sentences)
    rows = []
    for e in ENGINES:
        free = [i for i in range(sentences) if all(len(h) < caps[i] for x in ("pytorch", e) for h, _ in found[x][i])]
        best = [found[e][i][0][0] for i in range(sentences)]
        same = lambda items, depth: sum(  # noqa: E731
            [h for h, _ in found[e][i][:depth]] == [h for h, _ in found["pytorch"][i][:depth]] for i in items
        )
        rows.append({
            "engine": e, "sentences_per_s": speeds[e], "conversion_s": conversion.get(e),
            "best_same": same(range(sentences), 1), "uncapped": len(free), "best_same_uncapped": same(free, 1),
            "nbest_same": same(range(sentences), NBEST),
            "bleu": round(sacrebleu.corpus_bleu([task.detokenize(b) for b in best], [references]).score, 2),
        })
    return {
        "date": datetime.date.today().isoformat(), "threads": torch.get_num_threads(), "sentences": sentences,
        "rounds": rounds, "beam": BEAM, "nbest": NBEST,
        "command": f"OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python -m benchmarks.teacher_engine --sentences {sentences} --rounds {rounds}",
        "rows": rows,
    }


def render(results: dict[str, Any]) -> str:
    n = results["sentences"]
    base = statistics.median(results["rows"][0]["sentences_per_s"])
    lines = [
        "| teacher engine | sentences/s | speed-up | conversion | best hypothesis = fairseq2's | under the length limit: best = fairseq2's "
        f"| {results['nbest']}-best list = fairseq2's | BLEU of the best vs references |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        speed = statistics.median(row["sentences_per_s"])
        conversion = f"{row['conversion_s']:.1f} s" if row["conversion_s"] is not None else "—"
        lines.append(
            f"| `{row['engine']}` | {speed:.1f} | {speed / base:.2f}× | {conversion} | {row['best_same']} / {n} "
            f"| {row['best_same_uncapped']} / {row['uncapped']} | {row['nbest_same']} / {n} | {row['bleu']:.2f} |"
        )
    lines += ["", f"*The quickstart teacher decoding the first {n} training sources with `task.generate` (the n-best cache's "
              f"call), beam {results['beam']}, {results['nbest']} hypotheses kept, {results['threads']} threads; median of "
              f"{results['rounds']} alternating rounds; {results['date']}. Command: `{results['command']}`; results file "
              f"`{RESULTS.relative_to(REPO)}`.*"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render", action="store_true", help="only re-render the table from the results file")
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "quickstart")
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args.run, args.sentences, args.rounds), pages=PAGES)


if __name__ == "__main__":
    main()
