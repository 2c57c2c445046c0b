"""Generated docs (docs/recipes.md, docs/plugins.md) must match the code they are generated from."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def generator(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_reference_is_up_to_date():
    gen = generator("gen_recipe_docs")
    assert gen.DOC.read_text(encoding="utf-8") == gen.render(), (
        "docs/recipes.md is out of date; run: .venv/bin/python scripts/gen_recipe_docs.py"
    )


def test_plugin_list_is_up_to_date():
    gen = generator("gen_plugin_docs")
    assert gen.DOC.read_text(encoding="utf-8") == gen.render(), (
        "docs/plugins.md is out of date; run: .venv/bin/python scripts/gen_plugin_docs.py"
    )


def test_plugin_list_names_every_built_in_and_capability():
    text = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    for name in ("translation", "supervised", "word_kd", "seq_kd", "token_logits", "generation", "hidden_states"):
        assert f"| `{name}` |" in text
