"""Run a recipe's stages once per seed and summarise each stage's metrics as mean ± std.

The recipe is expanded into one recipe whose stages are repeated per seed (``baseline`` becomes
``baseline-s1``, ``baseline-s2``, ...; ``teacher:`` and ``init:`` references follow within a seed),
except the ``shared`` stages, which run once with the recipe's own seed (e.g. a teacher every
student reuses). Everything lives in one run folder, so an interrupted benchmark resumes: finished
stages are reused through the engine's stage hashing, an unfinished one continues from its last
checkpoint, and teacher-output caches with the same key are built once.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from seqkd.engine import Engine, StageReport
from seqkd.recipe import Recipe, load_recipe


@dataclass
class SeedRuns:
    recipe: Recipe  # the expanded recipe
    reports: dict[str, list[StageReport]]  # the original stage name -> one report per seed (one if shared)

    def values(self, stage: str, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.reports[stage]]


def expand(raw: dict[str, Any], seeds: list[int], shared: set[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The recipe with per-seed copies of its non-shared stages, and each new name's original."""
    stages, origin = [], {}
    for seed in seeds:
        for stage in raw["stages"]:
            if stage["name"] in shared:
                if seed == seeds[0]:
                    stages.append(stage)
                    origin[stage["name"]] = stage["name"]
                continue
            copy = {**stage, "name": f"{stage['name']}-s{seed}", "training": {**stage.get("training", {}), "seed": seed}}
            for ref in ("teacher", "init"):
                if copy.get(ref) is not None and copy[ref] not in shared:
                    copy[ref] = f"{copy[ref]}-s{seed}"
            stages.append(copy)
            origin[copy["name"]] = stage["name"]
    return {**raw, "stages": stages}, origin


def run_seeds(
    recipe_path: Path, seeds: list[int], out: Path, shared: set[str] = frozenset(), overrides: list[str] = (),
    stages: list[str] | None = None,
) -> SeedRuns:
    """Run the recipe per seed; ``stages`` keeps only those (and must include the teachers they name)."""
    raw = yaml.safe_load(recipe_path.read_text())
    if stages is not None:
        raw["stages"] = [s for s in raw["stages"] if s["name"] in stages]
    raw, origin = expand(raw, seeds, set(shared))
    out.mkdir(parents=True, exist_ok=True)
    expanded = out / recipe_path.name
    expanded.write_text(yaml.safe_dump(raw, sort_keys=False))
    # the recipe's relative data paths start at the original's folder, so it stays the recipe's path
    recipe = replace(load_recipe(expanded, [*overrides, f"output.dir={out}"]), path=recipe_path)
    reports: dict[str, list[StageReport]] = {}
    for report in Engine(recipe).run():
        reports.setdefault(origin[report.name], []).append(report)
    return SeedRuns(recipe, reports)


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(rows: list[list[str]]) -> str:
    """A plain left-aligned text table; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def bootstrap(differences: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the mean of ``differences`` resampled with replacement."""
    rng = random.Random(seed)
    n = len(differences)
    means = sorted(sum(differences[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
