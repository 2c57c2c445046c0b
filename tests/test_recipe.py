"""Recipe validation: good recipes pass, bad ones are refused with file, line, field and choices."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seqkd.cli import main
from seqkd.method import Method
from seqkd.plugins import load_plugins
from seqkd.recipe import RecipeError, load_recipe
from tests.conftest import REPO, tiny_recipe, write_recipe

SHIPPED = sorted((REPO / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO)) for p in SHIPPED])
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.stages and recipe.description


def refused(tmp_path: Path, text: str, *overrides: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, list(overrides))
    return str(info.value)


def tiny_text(tmp_path: Path) -> str:
    return yaml.safe_dump(tiny_recipe(tmp_path / "run"), sort_keys=False)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_unknown_method_names_line_and_suggests(tmp_path):
    text = tiny_text(tmp_path).replace("method: word_kd", "method: word_dk")
    message = refused(tmp_path, text)
    assert f"bad.yaml:{line_of(text, 'word_dk')}: stages[1].method: unknown method 'word_dk'" in message
    methods = ", ".join(sorted(load_plugins().methods))
    assert "did you mean 'word_kd'?" in message and f"valid choices: {methods}" in message


def test_unknown_task_suggests(tmp_path):
    text = tiny_text(tmp_path).replace("name: translation", "name: translaton")
    assert "unknown task 'translaton'; did you mean 'translation'?" in refused(tmp_path, text)


def test_unknown_field_lists_valid_fields(tmp_path):
    text = tiny_text(tmp_path).replace("max_steps: 250", "max_step: 250")
    message = refused(tmp_path, text)
    assert f"bad.yaml:{line_of(text, 'max_step:')}: training.max_step: unknown field 'max_step'" in message
    assert "did you mean 'max_steps'?" in message


def test_plugin_schema_errors_are_located(tmp_path):
    text = tiny_text(tmp_path).replace("alpha: 0.5", "alpha: 1.5")
    message = refused(tmp_path, text)
    assert f"bad.yaml:{line_of(text, 'alpha')}: stages[1].options.alpha:" in message
    assert "less than or equal to 1" in message


def test_literal_choices_are_listed(tmp_path):
    text = tiny_text(tmp_path).replace("split: valid", "split: dev")
    assert "evaluation.split: Input should be 'valid' or 'test'" in refused(tmp_path, text)


def test_teacher_must_be_an_earlier_stage(tmp_path):
    recipe = tiny_recipe(tmp_path / "run")
    recipe["stages"][1]["teacher"] = "teachr"
    message = refused(tmp_path, yaml.safe_dump(recipe))
    assert "stages[1].teacher: unknown earlier stage 'teachr'; did you mean 'teacher'?" in message


def test_kd_without_teacher_is_refused(tmp_path):
    recipe = tiny_recipe(tmp_path / "run")
    del recipe["stages"][1]["teacher"]
    assert "method 'word_kd' needs a teacher" in refused(tmp_path, yaml.safe_dump(recipe))


def test_capability_mismatch_is_refused(tmp_path):
    class NeedsCrf(Method):
        name = "needs_crf"
        description = "test method"
        requires = frozenset({"crf"})

        def loss(self, batch):
            raise NotImplementedError

    registry = load_plugins()
    registry.methods["needs_crf"] = NeedsCrf
    recipe = tiny_recipe(tmp_path / "run")
    recipe["stages"][0]["method"] = "needs_crf"
    path = write_recipe(tmp_path / "crf.yaml", recipe)
    with pytest.raises(RecipeError, match="needs capability crf that task 'translation' does not offer"):
        load_recipe(path, registry=registry)


def test_overrides_apply_and_are_validated(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "run"))
    recipe = load_recipe(path, ["training.max_steps=7", "stages.word_kd.options.alpha=0.25"])
    assert recipe.training.max_steps == 7 and recipe.stages[0].training.max_steps == 7
    assert recipe.stages[1].training.max_steps == 200  # the stage's own override still wins
    assert recipe.stages[1].options.alpha == 0.25
    message = refused(tmp_path, path.read_text(), "training.max_steps=-3")
    assert "(command-line override): training.max_steps: Input should be greater than or equal to 1" in message


def test_yaml_syntax_error_names_the_line(tmp_path):
    message = refused(tmp_path, "description: x\ntask: [unclosed\nmodels: {}\n")
    assert "bad.yaml:" in message and "not valid YAML" in message


def test_show_prints_defaults(tmp_path, capsys):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "run"))
    assert main(["show", str(path)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["training"]["label_smoothing"] == 0.1  # a default, not in the file
    assert shown["models"]["student"]["decoder_heads"] is None
    assert shown["stages"][1]["options"] == {"alpha": 0.5, "temperature": 1.0, "teacher_source": "online", "top_k": 8}


def test_validate_command_exit_codes(tmp_path, capsys):
    good = write_recipe(tmp_path / "good.yaml", tiny_recipe(tmp_path / "run"))
    assert main(["validate", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("method: word_kd", "method: nope"))
    assert main(["validate", str(bad)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_recipes_command_lists_shipped_recipes(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "bible-en-es/quickstart.yaml  - Quickstart" in out
