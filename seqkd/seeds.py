"""Run a recipe once per seed and summarise it: ``seqkd run RECIPE --seeds 1,2,3``.

The recipe is expanded into one recipe whose stages are repeated per seed (``baseline`` becomes
``baseline-s1``, ``baseline-s2``, ...; ``teacher:``, ``teachers:`` and ``init:`` references follow
within a seed, and so do the stages a task ``reads:``), except the ``shared`` stages, which run once
with the recipe's own seed (e.g. a teacher every student reuses). Everything lives in the recipe's
one output folder, so an interrupted sweep resumes: finished stages are reused through the engine's
stage hashing, an unfinished one continues from its last checkpoint, and teacher-output caches
with the same key are built once. The summary (``seeds.json`` in the output folder) holds each
stage's headline metrics per seed, their mean and standard deviation, and, against a baseline
stage, the per-seed paired differences.
"""

from __future__ import annotations

import copy
import datetime
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from seqkd.engine import Engine, StageReport
from seqkd.errors import SeqkdError
from seqkd.fileio import atomic_write_json, atomic_write_text
from seqkd.recipe import Recipe, apply_override, load_recipe


@dataclass
class SeedRuns:
    recipe: Recipe  # the expanded recipe
    seeds: list[int]
    reports: dict[str, list[StageReport]]  # the original stage name -> one report per seed (one if shared)

    def values(self, stage: str, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.reports[stage]]


def expand(raw: dict[str, Any], seeds: list[int], shared: set[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The recipe with per-seed copies of its non-shared stages, and each new name's original."""
    names = {s["name"] for s in raw["stages"]}
    unknown = sorted(shared - names)
    if unknown:
        raise SeqkdError(f"--shared names no stage of the recipe: {', '.join(unknown)} (stages: {', '.join(sorted(names))})")

    def renamed(name: Any, seed: int) -> Any:
        return f"{name}-s{seed}" if isinstance(name, str) and name in names and name not in shared else name

    stages, origin = [], {}
    for seed in seeds:
        for stage in raw["stages"]:
            if stage["name"] in shared:
                if seed == seeds[0]:
                    stages.append(stage)
                    origin[stage["name"]] = stage["name"]
                continue
            copy_ = {**stage, "name": renamed(stage["name"], seed), "training": {**stage.get("training", {}), "seed": seed}}
            for ref in ("teacher", "init"):
                if copy_.get(ref) is not None:
                    copy_[ref] = renamed(copy_[ref], seed)
            if copy_.get("teachers"):
                copy_["teachers"] = [renamed(t, seed) for t in copy_["teachers"]]
            stages.append(copy_)
            origin[copy_["name"]] = stage["name"]
    expanded = {**raw, "stages": stages}
    for task in (raw.get("tasks") or {}).values():
        reads = task.get("reads") or {}
        if any(source not in shared for source in reads.values()):
            raise SeqkdError(f"with --seeds, a stage whose outputs another task reads must be shared (--shared {','.join(sorted(reads.values()))})")
    return expanded, origin


def run_seeds(
    recipe_path: Path, seeds: list[int], out: Path | None = None, shared: set[str] = frozenset(), overrides: list[str] = (),
    stages: list[str] | None = None, force: bool = False,
) -> SeedRuns:
    """Run the recipe per seed in ``out`` (default: its output folder); ``stages`` keeps only those
    (and must include the teachers they name)."""
    original = load_recipe(recipe_path, list(overrides))  # refuses a bad recipe naming its own file and lines
    raw = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
    for override in overrides:
        apply_override(raw, override)
    if stages is not None:
        raw["stages"] = [s for s in raw["stages"] if s["name"] in stages]
    raw, origin = expand(copy.deepcopy(raw), seeds, set(shared))
    out = out if out is not None else original.output_dir
    out.mkdir(parents=True, exist_ok=True)
    expanded = out / f"seeds-{recipe_path.name}"
    atomic_write_text(expanded, yaml.safe_dump(raw, sort_keys=False))
    # the recipe's relative data paths start at the original's folder, so it stays the recipe's path
    recipe = replace(load_recipe(expanded, [f"output.dir={out}"]), path=recipe_path)
    reports: dict[str, list[StageReport]] = {}
    for report in Engine(recipe, force=force).run():
        reports.setdefault(origin[report.name], []).append(report)
    return SeedRuns(recipe, list(seeds), reports)


def summarise(runs: SeedRuns, baseline: str | None = None) -> dict[str, Any]:
    """Each stage's headline metrics per seed with mean and std, and paired differences from ``baseline``."""
    if baseline is not None and baseline not in runs.reports:
        raise SeqkdError(f"--baseline {baseline!r} is not a stage of the recipe (stages: {', '.join(runs.reports)})")
    stages: dict[str, Any] = {}
    for name, reports in runs.reports.items():
        headline = runs.recipe.tasks[reports[0].task].cls.headline_metrics
        per_seed = [{"seed": seed, **{m: r.metrics[m] for m in headline if m in r.metrics}} for seed, r in zip(runs.seeds, reports)]
        stages[name] = {"task": reports[0].task, "method": reports[0].method, "parameters": reports[0].parameters,
                        "seeds": per_seed, **_mean_std(per_seed)}
    paired: dict[str, Any] = {}
    if baseline is not None:
        base = stages[baseline]
        for name, stage in stages.items():
            if name == baseline or stage["task"] != base["task"] or len(stage["seeds"]) != len(base["seeds"]):
                continue
            diffs = [{"seed": a["seed"], **{m: round(a[m] - b[m], 4) for m in a if m != "seed" and m in b}} for a, b in zip(stage["seeds"], base["seeds"])]
            paired[name] = {"per_seed": diffs, **_mean_std(diffs)}
    return {"recipe": str(runs.recipe.path), "seeds": runs.seeds, "date": datetime.date.today().isoformat(),
            "baseline": baseline, "stages": stages, "paired": paired}


def _mean_std(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    metrics = [m for m in rows[0] if m != "seed"]
    mean = {m: round(statistics.mean(r[m] for r in rows), 4) for m in metrics}
    std = {m: round(statistics.stdev(r[m] for r in rows), 4) if len(rows) > 1 else 0.0 for m in metrics}
    return {"mean": mean, "std": std}


def write_summary(runs: SeedRuns, summary: dict[str, Any]) -> Path:
    path = runs.recipe.output_dir / "seeds.json"
    atomic_write_json(path, summary)
    return path


def format_summary(summary: dict[str, Any]) -> str:
    """A plain table: mean ± std of each headline metric, and the mean paired difference."""
    rows = [["stage", "method", "seeds", "metrics (mean ± std)", f"Δ vs {summary['baseline']}" if summary["baseline"] else ""]]
    for name, stage in summary["stages"].items():
        cells = ", ".join(f"{m} {stage['mean'][m]:.2f} ± {stage['std'][m]:.2f}" for m in stage["mean"])
        pair = summary["paired"].get(name)
        delta = ", ".join(f"{m} {pair['mean'][m]:+.2f} ± {pair['std'][m]:.2f}" for m in pair["mean"]) if pair else ""
        rows.append([name, stage["method"], str(len(stage["seeds"])), cells, delta])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
