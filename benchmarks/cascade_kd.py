"""Cascade speech translation: MT trained on gold transcripts, on ASR transcripts, and with cascade
KD (Fukuda, Sudoh & Nakamura, IWSLT 2021), scored end to end (test audio -> ASR -> MT), over seeds.

The ASR stage is trained once (seed 1) and shared: every MT model of every seed reads the same
transcripts, so the rows differ only in how the MT model was trained. Reported per MT stage:
BLEU and chrF end to end and on the gold transcripts (the oracle), mean ± std over seeds; the
per-seed paired BLEU difference from the MT model trained on ASR transcripts, with a 95 %
paired-bootstrap interval (1,000 resamples of the test utterances, corpus BLEU averaged over
seeds); and the ASR stage's WER/CER on the test split and on its own training split.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.cascade_kd [--seeds 1 2 3] [--out runs/bench-cascade]
    .venv/bin/python -m benchmarks.cascade_kd --render   # tables from the results file only

Results go to ``benchmarks/results/cascade_kd.json``; the table in docs/benchmarks.md is
rendered from it, between ``<!-- cascade_kd -->`` markers.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import torch

from benchmarks.common import REPO, publish
from benchmarks.seeds import interval, mean_std, paired_bleu_ci, signed
from seqkd.engine import Engine, load_trained_model
from seqkd.seeds import run_seeds

RESULTS = REPO / "benchmarks" / "results" / "cascade_kd.json"
RECIPE = REPO / "recipes" / "debian-speech" / "cascade.yaml"
ASR, BASELINE = "asr", "mt_asr"
MARK = "cascade_kd"
PAGES = (REPO / "docs" / "benchmarks.md", REPO / "README.md")


def measure(recipe: Path, seeds: list[int], out: Path) -> dict:
    runs = run_seeds(recipe, seeds, out, shared={ASR})
    engine = Engine(runs.recipe)
    asr_task, mt = engine.task("asr"), engine.task("mt")
    asr_report = runs.reports[ASR][0]
    asr_eval = runs.recipe.tasks["asr"].evaluation
    train_transcripts = (engine.stage_dir(ASR) / "outputs" / "train.txt").read_text(encoding="utf-8").splitlines()
    asr = {
        "parameters": asr_report.parameters,
        "test": {k: asr_report.metrics[k] for k in ("wer", "cer")},
        "train": {k: v for k, v in asr_task.score("train", train_transcripts, asr_eval).items() if k in ("wer", "cer")},
    }
    split = runs.recipe.tasks["mt"].evaluation.split
    refs = mt.references(split, len(mt.pairs()[split]))
    stages, hypotheses = {}, {}
    for name, reports in runs.reports.items():
        if name == ASR:
            continue
        seeds_out, hypotheses[name] = [], []
        for seed, report in zip(seeds, reports):
            stage = runs.recipe.stage(report.name)
            model, _ = load_trained_model(mt, engine.stage_dir(report.name) / "model.pt")
            oracle, _ = engine.score_model(mt, model, stage.evaluation.model_copy(update={"view": None}))
            seeds_out.append({"seed": seed, "bleu": report.metrics["bleu"], "chrf": report.metrics["chrf"],
                              "oracle_bleu": oracle["bleu"], "oracle_chrf": oracle["chrf"]})
            hypotheses[name].append((engine.stage_dir(report.name) / f"predictions.{split}.txt").read_text(encoding="utf-8").split("\n")[: len(refs)])
        stages[name] = {"method": reports[0].method, "parameters": reports[0].parameters, "seeds": seeds_out}
    paired = {
        name: {"per_seed": [round(a["bleu"] - b["bleu"], 2) for a, b in zip(stages[name]["seeds"], stages[BASELINE]["seeds"])],
               "bleu_ci95": [round(x, 2) for x in paired_bleu_ci(hypotheses[name], hypotheses[BASELINE], refs)]}
        for name in stages if name != BASELINE
    }
    return {
        "recipe": str(recipe.relative_to(REPO)), "split": split, "sentences": len(refs), "seeds": seeds,
        "date": datetime.date.today().isoformat(),
        "command": f"OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python -m benchmarks.cascade_kd --seeds {' '.join(map(str, seeds))}",
        "asr": asr, "baseline": BASELINE, "stages": stages, "paired": paired,
    }


def render(results: dict) -> str:
    """The markdown table: end-to-end and oracle BLEU/chrF, and the paired difference."""
    lines = [
        "| MT stage | method | BLEU (ASR input) | chrF (ASR input) | BLEU (gold input) | Δ BLEU vs mt_asr per seed | Δ BLEU 95 % CI |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, stage in results["stages"].items():
        cell = {k: mean_std([s[k] for s in stage["seeds"]]) for k in ("bleu", "chrf", "oracle_bleu")}
        pair = results["paired"].get(name)
        delta = signed(pair["per_seed"]) if pair else "(baseline)"
        ci = interval(pair["bleu_ci95"]) if pair else ""
        lines.append(f"| {name} | `{stage['method']}` | {cell['bleu']} | {cell['chrf']} | {cell['oracle_bleu']} | {delta} | {ci} |")
    asr = results["asr"]
    lines += ["", (
        f"ASR stage ({asr['parameters'] / 1e6:.1f} M parameters): WER {asr['test']['wer']:.2f} / CER {asr['test']['cer']:.2f} "
        f"on the test audio, WER {asr['train']['wer']:.2f} on its own training audio. {results['sentences']} {results['split']} "
        f"utterances, seeds {', '.join(map(str, results['seeds']))} ({results['recipe']}; {results['date']}). "
        f"Results file: `{RESULTS.relative_to(REPO)}`."
    )]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, nargs="?", default=RECIPE)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-cascade"))
    parser.add_argument("--render", action="store_true", help="only render the tables from the results file")
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args.recipe.resolve(), args.seeds, args.out), PAGES)

if __name__ == "__main__":
    main()
