"""The published tables are the results files rendered: a table edited by hand, or a results file
changed without re-rendering, fails here."""

from __future__ import annotations

import importlib
import json

import pytest

from benchmarks.common import PAGES
RENDERED = ["summarization_kd", "classification_kd", "export_speed", "precision", "quickstart", "data_scale", "cascade_kd", "teacher_engine", "grad_sync", "muka", "multilingual", "wd_reproduction", "ner_kd", "seq_kd", "crf_kbest", "word_kd_cost", "engine_overhead", "teacher_cache"]  # benchmarks whose tables are rendered from their results file


@pytest.mark.parametrize("name", RENDERED)
def test_each_published_table_matches_its_results_file(name):
    module = importlib.import_module(f"benchmarks.{name}")
    if not module.RESULTS.exists():
        pytest.skip(f"{module.RESULTS.name} not measured yet")
    expected = module.render(json.loads(module.RESULTS.read_text(encoding="utf-8")))
    for page in getattr(module, "PAGES", PAGES):  # a benchmark may publish on fewer pages
        text = page.read_text(encoding="utf-8")
        start, end = f"<!-- {module.MARK} -->", f"<!-- /{module.MARK} -->"
        assert start in text, f"{page.name} has no {start} table"
        shown = text.split(start, 1)[1].split(end, 1)[0].strip("\n")
        assert shown == expected, f"{page.name}: the {name} table differs from {module.RESULTS.name}; run python -m benchmarks.{name} --render"
