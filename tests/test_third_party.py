"""Third-party plugins as real installed distributions.

The example plugin (examples/seqkd-hidden-cosine) and a package written by ``seqkd new-plugin`` are
built and installed by pip into a temporary folder, which is then put on the path (``PYTHONPATH``
for subprocesses, ``sys.path`` in process): seqkd must find them through their dist-info entry
points exactly as it would in site-packages, and must not find them without that folder.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqkd.cli import main
from seqkd.errors import SeqkdError
from seqkd.plugins import ENTRY_POINT_GROUP, load_plugins
from seqkd.recipe import RecipeError, load_recipe
from seqkd.scaffold import write_plugin
from tests.conftest import CORPUS, REPO

EXAMPLE = REPO / "examples" / "seqkd-hidden-cosine"


def pip_install(source: Path, target: Path) -> Path:
    """Build ``source`` and install it into ``target`` with pip, offline; return ``target``.

    The source is copied first so that the build's ``build/`` and ``*.egg-info`` stay out of the
    repository."""
    copy = target.parent / f"src-{source.name}"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
               "--target", str(target), str(copy)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if "invalid command 'bdist_wheel'" in result.stdout + result.stderr:
        pytest.skip("this environment's setuptools cannot build wheels: install setuptools>=70.1 or wheel")
    assert result.returncode == 0, result.stdout + result.stderr
    return target


def env_with(path: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SEQKD_PLUGINS"}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def seqkd(*args: str, path: Path | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "seqkd", *args], capture_output=True, text=True, env=env_with(path))
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """The example plugin, installed into a folder of its own."""
    return pip_install(EXAMPLE, tmp_path_factory.mktemp("example") / "site")


# -- the example plugin, installed ------------------------------------------------------------


def test_installed_example_is_listed_with_its_file_hooks_and_api(example_site):
    out = seqkd("plugins", "--verbose", path=example_site)
    assert "hidden_cosine  (seqkd-hidden-cosine 0.2.0)" in out
    assert f"file:    {example_site / 'seqkd_hidden_cosine' / '__init__.py'}" in out
    header, *rest = out[out.index("hidden_cosine  ("):].splitlines()
    block = "\n".join(itertools.takewhile(lambda line: line.startswith(" "), rest))  # this plugin's lines
    assert "hooks:   register_methods" in block and "api:     2" in block
    assert "method:  hidden_cosine  needs: hidden_states, token_logits" in block


def test_without_the_installed_folder_the_plugin_is_gone():
    assert not any(e.name == "hidden_cosine" for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    registry = load_plugins()
    assert "hidden_cosine" not in registry.methods
    assert "hidden_cosine" not in {p.name for p in registry.plugins}


def test_discovered_in_process_from_its_dist_info(example_site, monkeypatch):
    monkeypatch.syspath_prepend(str(example_site))
    registry = load_plugins()
    info = next(p for p in registry.plugins if p.name == "hidden_cosine")
    assert (info.distribution, info.version, info.error, info.api) == ("seqkd-hidden-cosine", "0.2.0", None, "2")
    assert Path(info.path).is_relative_to(example_site) and info.hooks == ["register_methods"]
    method = registry.methods["hidden_cosine"]
    assert method.requires == {"token_logits", "hidden_states"}
    assert (method.num_teachers, method.same_output_space) == ((1, 1), True)
    assert {"supervised", "word_kd", "seq_kd"} <= set(registry.methods)


def test_allow_list_applies_to_installed_plugins(example_site, monkeypatch):
    monkeypatch.syspath_prepend(str(example_site))
    monkeypatch.setenv("SEQKD_PLUGINS", "translation,supervised")
    assert set(load_plugins().methods) == {"supervised"}
    monkeypatch.setenv("SEQKD_PLUGINS", "translation,hidden_cosine")
    registry = load_plugins()
    assert set(registry.methods) == {"hidden_cosine"} and set(registry.tasks) == {"translation"}


def test_its_recipe_validates_only_when_it_is_installed(example_site, monkeypatch):
    recipe = EXAMPLE / "recipe.yaml"
    with pytest.raises(RecipeError) as refused:
        load_recipe(recipe, registry=load_plugins())
    message = str(refused.value)
    assert "unknown method 'hidden_cosine'" in message
    assert "plugin package seqkd-hidden-cosine, which is not installed: pip install -e examples/seqkd-hidden-cosine" in message
    monkeypatch.syspath_prepend(str(example_site))
    loaded = load_recipe(recipe, registry=load_plugins())
    assert [s.method.name for s in loaded.stages] == ["supervised", "supervised", "word_kd", "hidden_cosine"]
    assert loaded.stages[-1].options.beta == 1.0 and loaded.stages[-1].options.projection is False
    assert [t.stage for t in loaded.stages[-1].teachers] == ["teacher"]


def test_a_task_without_hidden_states_is_refused_naming_the_capability(example_site, monkeypatch):
    monkeypatch.syspath_prepend(str(example_site))
    registry = load_plugins()

    class LogitsOnly(registry.tasks["translation"]):
        capabilities = frozenset({"token_logits", "generation"})

    registry.tasks["translation"] = LogitsOnly
    with pytest.raises(RecipeError, match="method 'hidden_cosine' needs capability hidden_states that task 'translation' does not offer"):
        load_recipe(EXAMPLE / "recipe.yaml", registry=registry)


def test_the_example_plugins_own_tests_pass_against_the_installed_copy(example_site, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True, text=True, cwd=tmp_path, env=env_with(example_site),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "8 passed" in result.stdout


# -- the hidden_states capability of the translation task -------------------------------------


def test_translation_hidden_states_agree_with_forward(tmp_path):
    from seqkd.tasks.translation.adapter import TranslationTask
    from seqkd.tasks.translation.config import TranslationConfig

    config = TranslationConfig.model_validate({
        "source_lang": "en", "target_lang": "es", "data": {"corpus": str(CORPUS), "max_train_pairs": 300},
        "vocab_size": 1000, "max_seq_len": 48,
    })
    task = TranslationTask(config, tmp_path / "shared", tmp_path)
    task.prepare()
    assert "hidden_states" in TranslationTask.capabilities
    torch.manual_seed(0)
    model = task.build_model(task.model_schema.model_validate(
        {"encoder_layers": 1, "decoder_layers": 1, "encoder_dim": 64, "decoder_dim": 32, "encoder_ffn_dim": 64, "encoder_heads": 4}
    )).eval()
    batch = next(iter(task.train_reader(512, seed=0)))
    with torch.no_grad():
        states, output = task.hidden_states(model, batch), task.forward(model, batch)
    assert states.hidden.shape == (*batch.target_out.shape, 32)  # the decoder's width
    assert torch.equal(states.mask, output.mask) and torch.equal(states.output.targets, output.targets)
    assert torch.allclose(states.output.logits, output.logits, atol=1e-5)


# -- plugin API versions ----------------------------------------------------------------------

API_PLUGIN = '''
from seqkd.hookspecs import hookimpl
from seqkd_plugins.supervised import Supervised

SEQKD_PLUGIN_API = {api!r}


class Versioned(Supervised):
    name = "versioned_{index}"


@hookimpl
def register_methods(register):
    register(Versioned)
'''


@pytest.mark.parametrize("index, api, error", [
    (0, "2", None),
    (1, "2.0", None),
    (2, "3", "built for seqkd plugin API 3, this seqkd provides 2; upgrade seqkd or install a plugin release for API 2"),
    (3, "1", "built for seqkd plugin API 1, this seqkd provides 2; install a plugin release for API 2 or a seqkd release for API 1"),
    (4, "2.7", "needs seqkd plugin API 2.7, this seqkd provides 2.0; upgrade seqkd"),
    (5, "one", "SEQKD_PLUGIN_API = 'one' is not a version such as '1' or '1.0'"),
])
def test_plugin_api_version_is_checked(index, api, error, tmp_path, monkeypatch):
    module = f"api_plugin_{index}"
    (tmp_path / f"{module}.py").write_text(API_PLUGIN.format(api=api, index=index))
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint(name="versioned", value=module, group=ENTRY_POINT_GROUP)
    registry = load_plugins(list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)) + [entry])
    info = next(p for p in registry.plugins if p.name == "versioned")
    assert info.api == api and info.path == str(tmp_path / f"{module}.py")
    if error is None:
        assert info.error is None and f"versioned_{index}" in registry.methods
    else:
        assert info.error == f"PluginAPIError: {error}"
        assert f"versioned_{index}" not in registry.methods and "word_kd" in registry.methods


# -- the scaffold -----------------------------------------------------------------------------


def test_new_plugin_installs_is_listed_and_its_own_tests_pass(tmp_path, monkeypatch, capsys):
    assert main(["new-plugin", "my_method", "--dir", str(tmp_path)]) == 0
    folder = tmp_path / "seqkd-my-method"
    assert f"wrote {folder / 'pyproject.toml'}" in capsys.readouterr().out
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "seqkd_my_method/__init__.py", "tests/test_my_method.py",
    }
    assert 'my_method = "seqkd_my_method"' in (folder / "pyproject.toml").read_text()
    site = pip_install(folder, tmp_path / "site")

    monkeypatch.syspath_prepend(str(site))
    registry = load_plugins()
    info = next(p for p in registry.plugins if p.name == "my_method")
    assert (info.distribution, info.error, info.methods, info.api) == ("seqkd-my-method", None, ["my_method"], "2")
    method = registry.methods["my_method"]
    assert method.options_schema.model_json_schema()["properties"].keys() == {"alpha", "temperature"}
    assert (method.num_teachers, method.same_output_space) == ((1, 1), True)

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests")],
        capture_output=True, text=True, cwd=tmp_path, env=env_with(site),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "4 passed" in result.stdout


def test_new_plugin_refuses_bad_names_taken_names_and_full_folders(tmp_path, capsys):
    registry = load_plugins()
    with pytest.raises(SeqkdError, match="use lowercase letters, digits and _"):
        write_plugin("My-Method", tmp_path, registry)
    with pytest.raises(SeqkdError, match="a method 'word_kd' is already registered by plugin 'word_kd'"):
        write_plugin("word_kd", tmp_path, registry)
    clashed = dataclasses.replace(registry, clashes={("method", "twice"): ["a (pkg-a 1.0)", "b (pkg-b 2.0)"]})
    with pytest.raises(SeqkdError, match=r"a method 'twice' is already registered by plugins a \(pkg-a 1.0\) and b \(pkg-b 2.0\)"):
        write_plugin("twice", tmp_path, clashed)  # a clashed name is in no registry.methods, yet taken
    (tmp_path / "seqkd-taken").mkdir()
    (tmp_path / "seqkd-taken" / "notes.txt").write_text("mine")
    assert main(["new-plugin", "taken", "--dir", str(tmp_path)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "seqkd-taken" / "notes.txt").read_text() == "mine"
