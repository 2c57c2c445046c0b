"""docs/recipes.md is generated from the recipe schemas and must match them."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def test_recipe_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_recipe_docs", REPO / "scripts" / "gen_recipe_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.DOC.read_text(encoding="utf-8") == gen.render(), (
        "docs/recipes.md is out of date; run: .venv/bin/python scripts/gen_recipe_docs.py"
    )
