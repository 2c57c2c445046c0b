"""Shared set-up for the benchmarks: the quickstart recipe's task, prepared once."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqkd.engine import Engine
from seqkd.fileio import atomic_write_text
from seqkd.recipe import Recipe, load_recipe

REPO = Path(__file__).resolve().parent.parent
PAGES = (REPO / "docs" / "benchmarks.md", REPO / "README.md")  # where rendered result tables stand
QUICKSTART = REPO / "recipes" / "bible-en-es" / "quickstart.yaml"


def quickstart(output_dir: Path, *overrides: str) -> tuple[Recipe, Engine]:
    recipe = load_recipe(QUICKSTART, [f"output.dir={output_dir}", *overrides])
    engine = Engine(recipe)
    engine.task()
    return recipe, engine


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def translation_speed(task: Any, sources: list[str], settings: Any) -> Callable[[Any], float]:
    """A ``run`` for :func:`alternating_speed`: sentences per second translating ``sources``."""
    def run(model: Any) -> float:
        with Timer() as t:
            task.decode(model, sources, settings)
        return len(sources) / t.seconds
    return run


def alternating_speed(models: dict[str, Any], run: Callable[[Any], float], rounds: int) -> dict[str, float]:
    """The median of ``run(model)`` (items per second) for each model, over rounds that alternate
    the order of the models, so that machine noise hits all of them alike."""
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for r in range(rounds):
        for name in (list(models) if r % 2 == 0 else list(reversed(models))):
            speeds[name].append(run(models[name]))
    return {name: statistics.median(values) for name, values in speeds.items()}


def write_between_markers(path: Path, mark: str, text: str) -> None:
    """Replace what stands between ``<!-- mark -->`` and ``<!-- /mark -->`` in ``path`` by ``text``."""
    page = path.read_text(encoding="utf-8")
    start, end = f"<!-- {mark} -->", f"<!-- /{mark} -->"
    if start not in page:
        raise SystemExit(f"{path}: no {start} ... {end} markers to write the table between")
    before, rest = page.split(start, 1)
    _, after = rest.split(end, 1)
    atomic_write_text(path, f"{before}{start}\n{text}\n{end}{after}")


def publish(
    results_path: Path, render: Callable[[dict[str, Any]], str], mark: str, measured: dict[str, Any] | None = None,
    pages: tuple[Path, ...] = PAGES,
) -> None:
    """Write ``measured`` (if given) to the results file, then render the file's table between the
    ``mark`` markers of each page: the published tables always come from the results files."""
    if measured is not None:
        atomic_write_text(results_path, json.dumps(measured, indent=1) + "\n")
    table = render(json.loads(results_path.read_text(encoding="utf-8")))
    print(table)
    for page in pages:
        write_between_markers(page, mark, table)
