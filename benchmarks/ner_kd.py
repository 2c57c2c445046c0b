"""k-best CRF distillation on the WNUT tweets, fairly: options tuned on validation, then 10 seeds on test.

``recipes/wnut-ner/kd.yaml`` gives the student, the starting options and the teacher's training.
Four steps, all in one run folder (finished stages are reused, so the command resumes):

0. **The teacher, chosen on the validation split**: each shape of ``TEACHERS`` is trained once; the
   one with the best validation F1 is the teacher, trained once more under its own name and shared
   by every run below.
1. **Tuning, on the validation split** (seeds ``--tune-seeds``): token-level KD over alpha x T;
   k-best CRF KD over k x T at alpha = beta = 1, then over (alpha, beta) at the best k and T. The
   option set with the highest mean validation F1 wins; the test split is not read.
2. **The test runs**: the baseline, token-level KD and k-best CRF KD with the chosen options, over
   ``--seeds`` (10 by default).
3. **What the teacher offers**: its validation F1 against the student baseline's (the design asks
   for a gap of >= 5 F1); over the training sentences, the mean weight pi_1 of its top path among its
   k best at T, and how often that path is the gold one (when it nearly always is, the sequence
   term teaches little beyond the gold tags).

Reported: entity F1 (seqeval, strict IOB2) mean ± std over seeds; per seed, the paired differences
kbest_crf − token_kd and kbest_crf − baseline, with a 95 % bootstrap interval over test sentences
(2,000 resamples; each resample's F1 recomputed per seed from entity counts, then averaged).

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.ner_kd [--seeds 1 ... 10] [--tune-seeds 1 2] [--out runs/bench-ner-kd]
    .venv/bin/python -m benchmarks.ner_kd --render   # the tables from the results file only
"""

from __future__ import annotations

import argparse
import datetime
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from benchmarks.common import REPO, publish
from benchmarks.seeds import interval, mean_std, signed
from seqkd.engine import Engine, load_trained_model
from seqkd.recipe import load_recipe
from seqkd.seeds import run_seeds

RECIPE = REPO / "recipes" / "wnut-ner" / "kd.yaml"
RESULTS = REPO / "benchmarks" / "results" / "ner_kd.json"
MARK = "ner_kd"
PAGES = (REPO / "docs" / "benchmarks.md",)
TOKEN_GRID = [{"alpha": a, "temperature": t} for a in (0.5, 1.0) for t in (1.0, 2.0, 4.0)]
KT_GRID = [{"k": k, "temperature": t} for k in (2, 4, 8) for t in (1.0, 2.0, 4.0)]
WEIGHT_GRID = [{"alpha": a, "beta": b} for a, b in ((1.0, 1.0), (0.5, 1.0), (2.0, 1.0), (1.0, 0.5), (1.0, 2.0), (1.0, 0.0), (0.0, 1.0))]
TUNED = {"token_kd": ("alpha", "temperature"), "kbest_crf": ("k", "temperature", "alpha", "beta")}
GAP_GOAL = 5.0
# the teachers tried on the validation split (model, training overrides); the recipe's first one,
# e100_h256_l2_d05, was no better than the student baseline there (about 21 F1)
TEACHERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "e100_h128_l1_d03": ({"embed_dim": 100, "hidden_dim": 128, "layers": 1, "dropout": 0.3}, {}),
    "e100_h256_l2_d03": ({"embed_dim": 100, "hidden_dim": 256, "layers": 2, "dropout": 0.3}, {}),
    "e200_h256_l1_d05": ({"embed_dim": 200, "hidden_dim": 256, "layers": 1, "dropout": 0.5}, {}),
    "e100_h256_l2_d05_lr0005": ({"embed_dim": 100, "hidden_dim": 256, "layers": 2, "dropout": 0.5}, {"lr": 0.005}),
    "e100_h256_l2_d05": ({"embed_dim": 100, "hidden_dim": 256, "layers": 2, "dropout": 0.5}, {}),
}


def _label(options: dict[str, Any]) -> str:
    return "-".join(f"{k[0]}{v:g}".replace(".", "p") for k, v in sorted(options.items()))


def _write(raw: dict[str, Any], stages: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**raw, "stages": stages}, sort_keys=False), encoding="utf-8")
    return path


def _base(teacher: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The recipe with the teacher of ``TEACHERS[teacher]``."""
    raw = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    model, training = TEACHERS[teacher]
    raw["models"]["teacher"] = model
    stages = {s["name"]: s for s in raw["stages"]}
    stages["teacher"]["training"] = {**stages["teacher"]["training"], **training}
    return raw, stages


def choose_teacher(out: Path) -> dict[str, Any]:
    """Each teacher of ``TEACHERS`` trained once and scored on the validation split; the best F1 teaches."""
    raw = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    teacher = next(s for s in raw["stages"] if s["name"] == "teacher")
    raw["models"] = {f"teacher_{label}": model for label, (model, _) in TEACHERS.items()}
    sweep = [
        {**teacher, "name": f"teacher_{label}", "model": f"teacher_{label}", "training": {**teacher["training"], **training},
         "evaluation": {"split": "valid"}}
        for label, (_, training) in TEACHERS.items()
    ]
    reports = Engine(load_recipe(_write(raw, sweep, out / "teachers.yaml"), [f"output.dir={out}"])).run()
    scores = {r.name.removeprefix("teacher_"): r.metrics["f1"] for r in reports}
    return {"valid_f1": scores, "chosen": max(scores, key=lambda label: scores[label])}


def tune(out: Path, seeds: list[int], teacher: str) -> dict[str, Any]:
    """The tuning runs (validation split only) and the options they choose."""
    raw, stages = _base(teacher)
    valid = {"evaluation": {"split": "valid"}}
    tried: dict[str, dict[str, Any]] = {}  # stage name -> {method, options}

    def name_of(method_stage: str, options: dict[str, Any]) -> str:
        merged = {**stages[method_stage]["options"], **options}
        return f"tune-{method_stage}-{_label({k: merged[k] for k in TUNED[method_stage]})}"

    def variant(method_stage: str, options: dict[str, Any]) -> dict[str, Any]:
        name = name_of(method_stage, options)
        merged = {**stages[method_stage]["options"], **options}
        tried[name] = {"stage": method_stage, "options": merged}
        return {**stages[method_stage], "name": name, "options": merged, **valid}

    def run(variants: list[dict[str, Any]], tag: str) -> dict[str, float]:
        recipe = _write(raw, [stages["teacher"], {**stages["baseline"], "name": "tune-baseline", **valid}, *variants], out / f"tune-{tag}.yaml")
        runs = run_seeds(recipe, seeds, out, shared={"teacher"})
        return {name: statistics.mean(runs.values(name, "f1")) for name in runs.reports if name.startswith("tune-")}

    scores = run([variant("token_kd", o) for o in TOKEN_GRID] + [variant("kbest_crf", o) for o in KT_GRID], "grid")
    best_kt = max(KT_GRID, key=lambda o: scores[name_of("kbest_crf", o)])
    scores.update(run([variant("kbest_crf", {**best_kt, **w}) for w in WEIGHT_GRID], "weights"))
    best = {
        method: max((n for n, t in tried.items() if t["stage"] == method), key=lambda n: scores[n])
        for method in ("token_kd", "kbest_crf")
    }
    return {
        "seeds": seeds, "baseline_f1": round(scores["tune-baseline"], 2),
        "tried": {n: {**t, "valid_f1": round(scores[n], 2)} for n, t in tried.items()},
        "chosen": {method: tried[name]["options"] for method, name in best.items()},
    }


def entity_counts(gold: list[list[str]], predicted: list[list[str]]) -> np.ndarray:
    """Per sentence (true positives, false positives, false negatives) of strict IOB2 entities."""
    from seqeval.scheme import IOB2, Entities

    g, p = Entities(gold, IOB2).entities, Entities(predicted, IOB2).entities
    rows = []
    for gs, ps in zip(g, p):
        gs, ps = {e.to_tuple()[1:] for e in gs}, {e.to_tuple()[1:] for e in ps}
        rows.append((len(gs & ps), len(ps - gs), len(gs - ps)))
    return np.array(rows, dtype=np.int64)


def paired_f1_ci(a: list[np.ndarray], b: list[np.ndarray], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of mean-over-seeds F1(a) − F1(b), resampling sentences (``(sentences, 3)`` counts per seed)."""
    rng = np.random.default_rng(seed)
    n = a[0].shape[0]
    idx = rng.integers(0, n, size=(resamples, n))

    def f1(counts: list[np.ndarray]) -> np.ndarray:
        sums = np.stack([c[idx].sum(axis=1) for c in counts])  # (seeds, resamples, 3)
        tp, fp, fn = sums[..., 0], sums[..., 1], sums[..., 2]
        return (100 * 2 * tp / np.maximum(2 * tp + fp + fn, 1)).mean(axis=0)

    diff = np.sort(f1(a) - f1(b))
    return float(diff[int(0.025 * resamples)]), float(diff[int(0.975 * resamples) - 1])


@torch.no_grad()
def teacher_paths(engine: Engine, k: int, temperature: float) -> dict[str, float]:
    """Over the training sentences: the teacher's mean top-path weight among its k best at T, and
    how often its top path is the gold one."""
    from seqkd_plugins.kbest_crf import path_weights

    task = engine.task()
    model, _ = load_trained_model(task, engine.stage_dir("teacher") / "model.pt")
    model.eval()
    weights, gold_hits, count = 0.0, 0, 0
    for batch in task.indexed_batches("train", 0, task.num_examples("train"), 4096):
        out = task.forward(model, batch)
        kbest = out.crf.kbest(out.logits.float(), out.mask, k)
        _, pi = path_weights(kbest, k, out.logits.shape[1], temperature, out.logits.device)
        weights += float(pi[:, 0].sum())
        for j, paths in enumerate(kbest):
            length = int(out.mask[j].sum())
            gold_hits += paths[0][0][:length] == out.targets[j, :length].tolist()
        count += len(kbest)
    return {"sentences": count, "top_path_weight": round(weights / count, 4), "top_path_is_gold": round(100 * gold_hits / count, 2)}


def measure(seeds: list[int], tune_seeds: list[int], out: Path) -> dict[str, Any]:
    teachers = choose_teacher(out)
    tuning = tune(out, tune_seeds, teachers["chosen"])
    raw, stages = _base(teachers["chosen"])
    final = [stages["teacher"], stages["baseline"]]
    final += [{**stages[m], "options": {**stages[m]["options"], **tuning["chosen"][m]}} for m in ("token_kd", "kbest_crf")]
    runs = run_seeds(_write(raw, final, out / "final.yaml"), seeds, out, shared={"teacher"})
    engine = Engine(runs.recipe)
    task = engine.task()
    teacher_model, _ = load_trained_model(task, engine.stage_dir("teacher") / "model.pt")
    teacher_valid, _ = engine.score_model(task, teacher_model, runs.recipe.stage("teacher").evaluation.model_copy(update={"split": "valid"}))
    from seqkd.tasks.ner.adapter import to_bio

    gold = [to_bio(s.tags) for s in task.sentences()["test"]]
    counts: dict[str, list[np.ndarray]] = {}
    results: dict[str, Any] = {}
    for name, reports in runs.reports.items():
        results[name] = {
            "method": reports[0].method, "parameters": reports[0].parameters,
            "options": runs.recipe.stage(reports[0].name).options.model_dump(mode="json"),
            "seeds": [{"seed": s, **{m: r.metrics[m] for m in ("f1", "precision", "recall")}} for s, r in zip(seeds, reports)],
        }
        counts[name] = [
            entity_counts(gold, [line.split() for line in (engine.stage_dir(r.name) / "predictions.test.txt").read_text().split("\n")[: len(gold)]])
            for r in reports
        ]
    paired = {}
    for a, b in (("kbest_crf", "token_kd"), ("kbest_crf", "baseline"), ("token_kd", "baseline")):
        paired[f"{a} − {b}"] = {
            "per_seed": [round(x["f1"] - y["f1"], 2) for x, y in zip(results[a]["seeds"], results[b]["seeds"])],
            "f1_ci95": [round(v, 2) for v in paired_f1_ci(counts[a], counts[b])],
        }
    chosen = tuning["chosen"]["kbest_crf"]
    return {
        "recipe": str(RECIPE.relative_to(REPO)), "seeds": seeds, "test_sentences": len(gold),
        "test_entities": int(sum(c[:, 0].sum() + c[:, 2].sum() for c in counts["baseline"][:1])),
        "date": datetime.date.today().isoformat(),
        "command": f"OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python -m benchmarks.ner_kd --seeds {' '.join(map(str, seeds))} "
                   f"--tune-seeds {' '.join(map(str, tune_seeds))}",
        "teachers": teachers, "tuning": tuning,
        "teacher": {"valid_f1": teacher_valid["f1"], "gap_to_baseline_valid": round(teacher_valid["f1"] - tuning["baseline_f1"], 2),
                    **teacher_paths(engine, chosen["k"], chosen["temperature"])},
        "stages": results, "paired": paired,
    }


def render(results: dict[str, Any]) -> str:
    t = results["teacher"]
    lines = ["| stage | method | params | options (tuned on validation) | F1 | precision | recall |", "|---|---|---|---|---|---|---|"]
    for name, stage in results["stages"].items():
        opts = ", ".join(f"{k} {v}" for k, v in stage["options"].items() if k in ("k", "alpha", "beta", "temperature")) or "—"
        lines.append(
            f"| {name} | `{stage['method']}` | {stage['parameters'] / 1e6:.2f} M | {opts} | "
            + " | ".join(mean_std([s[m] for s in stage["seeds"]]) for m in ("f1", "precision", "recall")) + " |"
        )
    lines += ["", "| comparison | Δ F1 per seed | Δ F1 95 % CI |", "|---|---|---|"]
    for name, pair in results["paired"].items():
        lines.append(f"| {name} | {signed(pair['per_seed'])} | {interval(pair['f1_ci95'])} |")
    gap_note = "meets" if t["gap_to_baseline_valid"] >= GAP_GOAL else "falls short of"
    lines += ["", (
        f"Entity F1 (seqeval, strict IOB2) on the {results['test_sentences']} test tweets ({results['test_entities']} entities), "
        f"seeds {results['seeds'][0]}–{results['seeds'][-1]}; the teacher is one run. The teacher's validation F1 is "
        f"{t['valid_f1']:.2f}, {t['gap_to_baseline_valid']:+.2f} over the student baseline's (tuning seeds), which {gap_note} the "
        f"{GAP_GOAL:.0f}-point design goal. Over {t['sentences']} training tweets its top path holds on average "
        f"{t['top_path_weight']:.3f} of the weight of its k best at T, and is the gold tagging for {t['top_path_is_gold']:.1f} % "
        f"of them. Teachers tried (validation F1): "
        + ", ".join(f"{label} {f1:.2f}" + (" (chosen)" if label == results["teachers"]["chosen"] else "") for label, f1 in results["teachers"]["valid_f1"].items())
        + " (e: embedding size, h: LSTM hidden size, l: layers, d: dropout, d03 = 0.3, lr: learning rate, lr0005 = 0.005). "
        f"{len(results['tuning']['tried'])} option sets were tried on the validation split. {results['recipe']}; "
        f"{results['date']}. Command: `{results['command']}`; results file `{RESULTS.relative_to(REPO)}`."
    )]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-ner-kd"))
    parser.add_argument("--render", action="store_true", help="only render the tables from the results file")
    args = parser.parse_args()
    publish(RESULTS, render, MARK, None if args.render else measure(args.seeds, args.tune_seeds, args.out), pages=PAGES)


if __name__ == "__main__":
    main()
