"""Generated docs (docs/recipes.md, docs/plugins.md) must match the code they are generated from."""

from __future__ import annotations

import importlib.util

import pytest

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


def test_the_guides_end_to_end_example_runs(trained_run, tmp_path):
    """docs/writing-a-method-plugin.md section 9: its plugin, installed into a folder of its own,
    distils a teacher trained elsewhere from a recipe in another folder (at test size)."""
    import json
    import re
    import subprocess
    import sys

    from seqkd.recipe import load_recipe
    from tests.conftest import tiny_recipe
    from tests.test_third_party import env_with, pip_install

    text = (REPO / "docs" / "writing-a-method-plugin.md").read_text(encoding="utf-8")
    section = text[text.index("## 9. "):]
    files = dict(re.findall(r"^`([\w./-]+)`[^\n]*:\n\n```\w+\n(.*?)```", section, flags=re.M | re.S))
    code = files["seqkd-reverse-kd/seqkd_reverse_kd/__init__.py"]
    assert len([line for line in code.splitlines() if line.strip()]) <= 40
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content, encoding="utf-8")
    site = pip_install(tmp_path / "seqkd-reverse-kd", tmp_path / "site")

    tiny = tiny_recipe(tmp_path / "run")
    teacher = load_recipe(trained_run[0]).output_dir / "teacher" / "model.pt"
    overrides = [
        f"task={json.dumps(tiny['task'])}", f"models.student={json.dumps(tiny['models']['student'])}",
        "training.max_steps=30", "training.log_every=10", "training.validate_every=30", "training.warmup_steps=10",
        "evaluation.max_sentences=20", "evaluation.beam_size=2", f"output.dir={tmp_path / 'run'}",
        f"stages.reverse_kd.teacher_checkpoint={teacher}", "stages.reverse_kd.options.warmup=20",
    ]
    result = subprocess.run([sys.executable, "-m", "seqkd", "run", str(tmp_path / "my-recipes" / "reverse-kd.yaml"), *overrides],
                            capture_output=True, text=True, env=env_with(site))
    assert result.returncode == 0, result.stderr[-2000:]
    train = [json.loads(line) for line in (tmp_path / "run" / "reverse_kd" / "metrics.jsonl").read_text().splitlines()]
    alphas = [r["alpha"] for r in train if r["kind"] == "train"]
    assert alphas[0] < alphas[1] < alphas[2] and alphas[2] == pytest.approx(0.5)  # warmed up over 20 of 30 updates
