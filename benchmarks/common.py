"""Shared set-up for the benchmarks: the quickstart recipe's task, prepared once."""

from __future__ import annotations

import time
from pathlib import Path

from seqkd.engine import Engine
from seqkd.recipe import Recipe, load_recipe

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "recipes" / "bible-en-es" / "quickstart.yaml"


def quickstart(output_dir: Path, *overrides: str) -> tuple[Recipe, Engine]:
    recipe = load_recipe(QUICKSTART, [f"output.dir={output_dir}", *overrides])
    engine = Engine(recipe)
    engine.task.prepare()
    return recipe, engine


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
