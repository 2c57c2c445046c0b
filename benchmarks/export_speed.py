"""CTranslate2 exports of the quickstart run: sentences/s and BLEU of every stage in PyTorch
(seqkd's fairseq2 beam search) and in CTranslate2 with float32 and int8 weights.

Every stage of a finished quickstart run (``runs/quickstart``: teacher, baseline, word_kd) is
exported with ``seqkd export`` at float32 and int8, then each of the nine systems translates the
same test sentences (the first 400, those the run's report scores) end to end, text in and text
out, with the recipe's evaluation settings: beam 4, length penalty 1, batches of 64 sentences
sorted by length, each batch's length cap from its longest source, as seqkd's beam search does. The
rounds alternate the order of the systems in one process so that machine noise hits all alike; the
median is kept. BLEU (sacreBLEU, as ``seqkd run`` reports it) is computed on the same outputs, and
"same" counts the sentences whose output is the PyTorch model's own. The users' goal: the int8
student at least 10x the PyTorch teacher's speed, at most 0.5 BLEU below the PyTorch student.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.export_speed [--run runs/quickstart] [--threads 2] [--rounds 3]
    .venv/bin/python -m benchmarks.export_speed --render   # the table from the results file only

The results go to ``benchmarks/results/export_speed.json`` and the table into docs/benchmarks.md
between the ``export_speed`` markers.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import QUICKSTART, REPO, Timer, alternating_speed, publish
from seqkd.fileio import atomic_write_text

RESULTS = REPO / "benchmarks" / "results" / "export_speed.json"
MARK = "export_speed"
PAGES = (REPO / "docs" / "benchmarks.md",)  # the table stands on this page only
ENGINES = ("pytorch", "float32", "int8")
SPEEDUP_GOAL, BLEU_GOAL = 10.0, 0.5


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(run: Path, recipe_path: Path, sentences: int, rounds: int, threads: int) -> dict[str, Any]:
    import argparse as ap

    import ctranslate2

    from seqkd.engine import Engine, load_trained_model
    from seqkd.export import export
    from seqkd.recipe import load_recipe
    from seqkd.tasks.seq2seq.export import max_decoding_length

    torch.set_num_threads(threads)
    recipe = load_recipe(recipe_path, [f"output.dir={run}"])
    engine = Engine(recipe)
    task = engine.task()
    settings = recipe.only_task().evaluation
    sources = [p.source for p in task.pairs()["test"][:sentences]]
    stages = [s.name for s in recipe.stages if (engine.stage_dir(s.name) / "model.pt").exists()]
    if not stages:
        raise SystemExit(f"{run}: no finished stage; run `seqkd run {recipe_path}` first")

    systems: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for stage in stages:
        path = engine.stage_dir(stage) / "model.pt"
        systems[f"{stage}/pytorch"] = load_trained_model(task, path)[0].eval()
        sizes[f"{stage}/pytorch"] = path.stat().st_size
        for quantization in ENGINES[1:]:
            folder = export(ap.Namespace(file=recipe_path, overrides=[f"output.dir={run}"], stage=stage, format="ctranslate2",
                                         quantization=quantization, output=None))
            systems[f"{stage}/{quantization}"] = ctranslate2.Translator(
                str(folder), device="cpu", compute_type=quantization, intra_threads=threads, inter_threads=1)
            sizes[f"{stage}/{quantization}"] = (folder / "model.bin").stat().st_size

    # CTranslate2 decodes like seqkd's beam search: batches of sentences sorted by length, each
    # batch's length cap from its longest source (fairseq2's rule), sentencepiece in and out
    vocab = task.vocab
    options = {"beam_size": settings.beam_size, "length_penalty": settings.len_penalty, "min_decoding_length": settings.min_len - 1,
               "no_repeat_ngram_size": settings.no_repeat_ngram, "max_input_length": task.max_source_len}

    def ct2_decode(translator: Any, texts: list[str]) -> list[str]:
        pieces = vocab.encode([t.strip() for t in texts], out_type=str)
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
        out: list[str] = [""] * len(pieces)
        for lo in range(0, len(order), settings.batch_size):
            batch = order[lo : lo + settings.batch_size]
            longest = min(max(len(pieces[i]) for i in batch), task.max_source_len - 1)
            results = translator.translate_batch(
                [pieces[i] for i in batch], max_decoding_length=max_decoding_length(settings, longest, task._positions), **options)
            for i, result in zip(batch, results):
                out[i] = vocab.decode(result.hypotheses[0])
        return out

    outputs: dict[str, list[str]] = {}

    def timed(name_and_system: tuple[str, Any]) -> float:
        name, system = name_and_system
        with Timer() as t:
            hyps = task.decode(system, sources, settings) if name.endswith("/pytorch") else ct2_decode(system, sources)
        outputs.setdefault(name, hyps)
        return len(sources) / t.seconds

    for name, system in systems.items():  # warm up (first calls allocate and initialise), untimed
        task.decode(system, sources[:16], settings) if name.endswith("/pytorch") else ct2_decode(system, sources[:16])
    speeds = alternating_speed({name: (name, system) for name, system in systems.items()}, timed, rounds)
    uncut = [len(ids) < task.max_source_len for ids in vocab.encode(sources)]  # sources neither engine cuts
    rows: dict[str, dict[str, Any]] = {}
    for name in systems:
        stage, engine_name = name.split("/")
        metrics = task.score("test", outputs[name], settings)
        reference = outputs[f"{stage}/pytorch"]
        rows.setdefault(stage, {})[engine_name] = {
            "sentences_per_second": round(speeds[name], 2),
            "bleu": metrics["bleu"], "chrf": metrics["chrf"],
            "same_as_pytorch": sum(a == b for a, b in zip(outputs[name], reference)),
            "same_as_pytorch_uncut": sum(a == b for a, b, whole in zip(outputs[name], reference, uncut) if whole),
            "size_bytes": sizes[name],
        }
    return {
        "recipe": str(recipe_path.relative_to(REPO) if recipe_path.is_absolute() and recipe_path.is_relative_to(REPO) else recipe_path),
        "run": str(run), "date": datetime.date.today().isoformat(), "sentences": len(sources), "split": "test",
        "beam_size": settings.beam_size, "batch_size": settings.batch_size, "threads": threads, "rounds": rounds,
        "cut_sources": uncut.count(False),
        "bleu_signature": task.score("test", outputs[f"{stages[0]}/pytorch"], settings)["bleu_signature"],
        "versions": {"torch": torch.__version__, "ctranslate2": ctranslate2.__version__}, "cpu": _cpu(),
        "stages": rows,
    }


def goal(results: dict[str, Any]) -> list[str]:
    """One sentence per student: is the users' goal met by its int8 export?"""
    teacher = results["stages"].get("teacher", {}).get("pytorch")
    lines = []
    for stage, row in results["stages"].items():
        if stage == "teacher" or teacher is None:
            continue
        speedup = row["int8"]["sentences_per_second"] / teacher["sentences_per_second"]
        drop = row["pytorch"]["bleu"] - row["int8"]["bleu"]
        met = speedup >= SPEEDUP_GOAL and drop <= BLEU_GOAL
        lines.append(
            f"{stage}: int8 is {speedup:.1f}× the PyTorch teacher (goal ≥ {SPEEDUP_GOAL:.0f}×) at {drop:+.2f} BLEU below its "
            f"PyTorch self (goal ≤ {BLEU_GOAL}): {'met' if met else 'not met'}."
        )
    return lines


def render(results: dict[str, Any]) -> str:
    """The markdown table: per stage and engine, size, BLEU, chrF, speed and its ratio to the PyTorch teacher."""
    base = results["stages"].get("teacher", next(iter(results["stages"].values())))["pytorch"]["sentences_per_second"]
    base_name = "teacher" if "teacher" in results["stages"] else next(iter(results["stages"]))
    lines = [f"| stage | engine | weights | size | BLEU | chrF | sent/s | vs PyTorch {base_name} | same output as PyTorch |",
             "|---|---|---|---|---|---|---|---|---|"]
    n = results["sentences"]
    for stage, row in results["stages"].items():
        for engine in ENGINES:
            r = row[engine]
            same = "-" if engine == "pytorch" else f"{r['same_as_pytorch']}/{n} ({r['same_as_pytorch_uncut']}/{n - results['cut_sources']} uncut)"
            lines.append(
                f"| {stage} | {'PyTorch' if engine == 'pytorch' else 'CTranslate2'} | {'float32' if engine == 'pytorch' else engine} | "
                f"{r['size_bytes'] / 1e6:.1f} MB | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['sentences_per_second']:.1f} | "
                f"{r['sentences_per_second'] / base:.2f}× | {same} |"
            )
    lines += ["", *goal(results), "", (
        f"{n} {results['split']} sentences of `{results['recipe']}` ({results['run']}; {results['date']}), {results['cut_sources']} "
        f"of them longer than the model reads; beam {results['beam_size']}, batches of {results['batch_size']}, "
        f"{results['threads']} threads (torch threads / CTranslate2 intra_threads), median of {results['rounds']} alternating rounds "
        f"in one process, text in and text out; {results['cpu']}; torch {results['versions']['torch']}, CTranslate2 "
        f"{results['versions']['ctranslate2']}. Size: model.pt (PyTorch) or model.bin (CTranslate2). BLEU: {results['bleu_signature']}. "
        "Where a float32 output differs from PyTorch's, the source was cut (seqkd cuts it without its EOS, CTranslate2 keeps "
        "one) or beam hypotheses ran to the length cap (fairseq2 forces and scores a final EOS there, CTranslate2 stops "
        "without one, so such hypotheses rank differently). "
        f"Results file: `{RESULTS.relative_to(REPO)}`."
    )]
    return "\n".join(lines)


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/quickstart"), help="the finished quickstart run folder")
    parser.add_argument("--recipe", type=Path, default=QUICKSTART)
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--render", action="store_true", help="only render the table from the results file")
    args = parser.parse_args()
    measured = None if args.render else measure(args.run, args.recipe, args.sentences, args.rounds, args.threads)
    publish(RESULTS, render, MARK, measured, PAGES)


if __name__ == "__main__":
    main()
