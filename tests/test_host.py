"""The plugin host: entry points, allow-list, broken plugins, checked registrations, name clashes."""

from __future__ import annotations

import importlib.metadata
import itertools
import random
import subprocess
import sys
from pathlib import Path

import pytest

from seqkd import plugins
from seqkd.plugins import CORE_COMMANDS, ENTRY_POINT_GROUP, PluginClash, Registry, load_plugins
from seqkd.tasks.base import CAPABILITY_HOOKS
from tests.conftest import REPO


def ep(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def installed() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


# What every fake plugin module below starts with: classes that satisfy the current contracts,
# whatever abstract methods they gain, so each test breaks exactly one rule.
PREAMBLE = """
from pydantic import BaseModel

from seqkd.hookspecs import Command, hookimpl
from seqkd.method import Method
from seqkd.tasks.base import TaskAdapter


class Schema(BaseModel):
    pass


def stub(*args, **kwargs):
    raise NotImplementedError


def concrete(base, **attributes):
    body = {m: stub for m in base.__abstractmethods__}
    body.update(attributes)
    return type("Fake", (base,), body)


def task(**attributes):
    defaults = dict(description="a test task", capabilities=frozenset({"token_logits"}),
                    config_schema=Schema, model_schema=Schema, evaluation_schema=Schema)
    return concrete(TaskAdapter, **{**defaults, **attributes})


def method(**attributes):
    return concrete(Method, **{"description": "a test method", **attributes})


def command(name, help="a test command"):
    return Command(name, help, lambda parser: None, lambda args: 0)
"""

_modules = itertools.count()


def write_module(folder: Path, source: str) -> str:
    """A fresh module name each time: Python caches imports by name."""
    module = f"host_fake_{next(_modules)}"
    (folder / f"{module}.py").write_text(PREAMBLE + source)
    return module


def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> importlib.metadata.EntryPoint:
    """An entry point (of no distribution) whose module is ``source``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return ep(name, write_module(tmp_path, source))


def distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dist: str, version: str, name: str, source: str
) -> importlib.metadata.EntryPoint:
    """An installed distribution ``dist`` whose entry point ``name`` loads ``source``, found the way
    seqkd finds real ones: from its dist-info on the path."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    module = write_module(site, source)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    return next(e for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if e.name == name)


def listing(registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``seqkd plugins`` on ``registry``: its exit status and output."""
    from seqkd.cli import main

    monkeypatch.setattr(plugins, "_registry", registry)
    capsys.readouterr()
    status = main(["plugins", *args])
    return status, capsys.readouterr().out


GOOD = """
@hookimpl
def register_tasks(register):
    register(task(name="good_task"))
    register(task(name="good_generator", capabilities=frozenset({"generation"}),
                  **{hook: stub for hook in GENERATION}))


@hookimpl
def register_methods(register):
    register(method(name="good_method"))


@hookimpl
def register_commands(register):
    register(command("good-command", help="does good things"))
""".replace("GENERATION", repr(CAPABILITY_HOOKS["generation"]))

GENERATION_HOOKS = ", ".join(f"{hook}()" for hook in CAPABILITY_HOOKS["generation"])

REFUSED = {
    "not_a_method": ("""
class Plain:
    name = "plain"
    description = "not a Method"


@hookimpl
def register_methods(register):
    register(Plain)
""", "method 'plain': is not a subclass of seqkd.method.Method"),
    "no_description": ("""
@hookimpl
def register_methods(register):
    register(concrete(Method, name="undescribed"))
""", "method 'undescribed': missing class attribute 'description'"),
    "wrong_type": ("""
@hookimpl
def register_methods(register):
    register(method(name="listed", requires=["token_logits"]))
""", "method 'listed': class attribute 'requires' must be a set of str, got list ['token_logits']"),
    "no_generation": ("""
@hookimpl
def register_tasks(register):
    register(task(name="mute", capabilities=frozenset({"token_logits", "generation"})))
""", f"task 'mute': declares capability 'generation' but does not implement {GENERATION_HOOKS}"),
    "abstract": ("""
class Abstract(Method):
    name = "abstract"
    description = "forgot its loss"


@hookimpl
def register_methods(register):
    register(Abstract)
""", "method 'abstract': is abstract: does not implement loss()"),
    "core_command": ("""
@hookimpl
def register_commands(register):
    register(command("run"))
""", "command 'run': is a core seqkd command"),
    "not_a_command": ("""
@hookimpl
def register_commands(register):
    register(("translate", "a tuple"))
""", "command tuple ('translate', 'a tuple'): is not a seqkd.hookspecs.Command"),
}


def test_builtins_load_through_the_entry_point_group():
    names = {e.name for e in installed()}
    assert {"supervised", "word_kd", "translation"} <= names
    registry = load_plugins()
    assert {"supervised", "word_kd"} <= set(registry.methods)
    assert "translation" in registry.tasks
    info = {p.name: p for p in registry.plugins}
    assert info["word_kd"].distribution == "seqkd" and info["word_kd"].methods == ["word_kd"]


def test_allow_list_restricts_what_loads(monkeypatch):
    monkeypatch.setenv("SEQKD_PLUGINS", "translation,supervised")
    registry = load_plugins()
    assert set(registry.methods) == {"supervised"}
    assert set(registry.tasks) == {"translation"}
    assert {p.name for p in registry.plugins} == {"translation", "supervised"}


def test_broken_plugin_is_named_and_the_rest_still_load():
    registry = load_plugins(installed() + [ep("broken", "tests.fixtures.broken_plugin")])
    broken = next(p for p in registry.plugins if p.name == "broken")
    assert broken.error is not None and "ModuleNotFoundError" in broken.error
    assert {"supervised", "word_kd"} <= set(registry.methods)


def test_plugin_raising_during_registration_is_skipped():
    registry = load_plugins(installed() + [ep("explodes", "tests.fixtures.raising_plugin")])
    failed = next(p for p in registry.plugins if p.name == "explodes")
    assert "RuntimeError" in failed.error
    assert "word_kd" in registry.methods


def test_a_plugin_registering_one_name_twice_is_refused(tmp_path, monkeypatch):
    twice = plugin(tmp_path, monkeypatch, "twice", """
@hookimpl
def register_methods(register):
    register(method(name="same"))
    register(method(name="same"))
""")
    registry = load_plugins([twice])
    assert registry.plugins[0].error == "PluginError: plugin 'twice': method 'same': registered twice by this plugin"
    assert registry.lookup("method", "same") is None and not registry.clashes


def test_plugins_command_lists_names_versions_and_contributions():
    out = subprocess.run([sys.executable, "-m", "seqkd", "plugins"], capture_output=True, text=True, check=True).stdout
    assert "word_kd  (seqkd 0.1.0)" in out
    assert "method:  supervised" in out and "task:    translation" in out


@pytest.mark.parametrize("module", ["tests.fixtures.broken_plugin"])
def test_broken_plugin_does_not_break_the_cli(module, monkeypatch):
    # the CLI uses the process-wide registry; a failed plugin appears as FAILED, exit code 0
    from seqkd import plugins

    monkeypatch.setattr(plugins, "_registry", load_plugins(installed() + [ep("broken", module)]))
    from seqkd.cli import main

    assert main(["plugins"]) == 0
    assert main(["plugins", "--strict"]) == 1


def test_load_order_does_not_change_the_registry():
    # entry points load sorted by name: whatever order the environment lists them in, the same
    # plugins win, fail and register the same names
    entries = installed() + [ep("zz_duplicate", "tests.fixtures.duplicate_plugin"), ep("explodes", "tests.fixtures.raising_plugin")]
    reference = load_plugins(entries)
    assert [p.name for p in reference.plugins] == sorted(e.name for e in entries)
    for seed in range(3):
        shuffled_entries = entries[:]
        random.Random(seed).shuffle(shuffled_entries)
        shuffled = load_plugins(shuffled_entries)
        assert shuffled.plugins == reference.plugins
        assert shuffled.methods == reference.methods and shuffled.tasks == reference.tasks
        assert shuffled.clashes == reference.clashes
    assert reference.clashes[("method", "word_kd")] == ["word_kd (seqkd 0.1.0)", "zz_duplicate (? ?)"]
    assert "word_kd" not in reference.methods


def test_verbose_listing_shows_file_and_hooks(capsys):
    from seqkd.cli import main

    assert main(["plugins", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert f"file:    {REPO / 'plugins' / 'word_kd' / '__init__.py'}" in out
    assert "hooks:   register_commands, register_tasks" in out and "hooks:   register_methods" in out
    assert "  command: translate  - " in out


# -- registrations are checked --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_bad_registration_refuses_its_plugin_and_the_others_load(name, tmp_path, monkeypatch, capsys):
    source, problem = REFUSED[name]
    good = plugin(tmp_path, monkeypatch, "good", GOOD)
    registry = load_plugins([good, plugin(tmp_path, monkeypatch, name, source)])
    refused = next(p for p in registry.plugins if p.name == name)
    assert refused.error == f"PluginError: plugin {name!r}: {problem}"
    assert (refused.tasks, refused.methods, refused.commands) == ([], [], [])
    assert set(registry.tasks) == {"good_task", "good_generator"} and set(registry.methods) == {"good_method"}
    assert set(registry.commands) == {"good-command"}
    status, out = listing(registry, monkeypatch, capsys)
    assert status == 0
    assert f"  FAILED:  PluginError: plugin {name!r}: {problem}" in out
    assert "  method:  good_method  needs: -  - a test method" in out
    assert "  command: good-command  - does good things" in out


def test_every_kind_of_broken_plugin_at_once_still_lists_the_good_one(tmp_path, monkeypatch, capsys):
    broken = [plugin(tmp_path, monkeypatch, name, source) for name, (source, _) in REFUSED.items()]
    raising = plugin(tmp_path, monkeypatch, "raises_on_import", 'raise RuntimeError("no GPU driver")')
    registry = load_plugins([plugin(tmp_path, monkeypatch, "good", GOOD), raising, *broken])
    errors = {p.name: p.error for p in registry.plugins}
    assert errors.pop("good") is None
    assert errors.pop("raises_on_import") == "RuntimeError: no GPU driver"
    assert all(error.startswith(f"PluginError: plugin {name!r}: ") for name, error in errors.items())
    status, out = listing(registry, monkeypatch, capsys)
    assert status == 0 and "good  (? ?)" in out and "  task:    good_task  capabilities: token_logits" in out
    assert out.count("  FAILED:  ") == len(REFUSED) + 1
    assert listing(registry, monkeypatch, capsys, "--strict")[0] == 1


def test_a_command_another_plugin_has_refuses_the_later_plugin(tmp_path, monkeypatch):
    again = plugin(tmp_path, monkeypatch, "zz_again", """
@hookimpl
def register_commands(register):
    register(command("good-command"))
""")
    registry = load_plugins([again, plugin(tmp_path, monkeypatch, "good", GOOD)])
    error = next(p.error for p in registry.plugins if p.name == "zz_again")
    assert error == "PluginError: plugin 'zz_again': command 'good-command': is already registered by plugin 'good'"
    assert registry.commands["good-command"].help == "does good things"
    assert CORE_COMMANDS >= {"run", "plugins", "cache"}


# -- name clashes between plugins -----------------------------------------------------------------

SHARED = """
@hookimpl
def register_methods(register):
    register(method(name="shared", description="{owner}'s shared"))
    register(method(name="only_{owner}"))
"""


def test_a_name_two_distributions_register_is_unusable_until_one_is_chosen(tmp_path, monkeypatch, capsys):
    alpha = distribution(tmp_path, monkeypatch, "seqkd-alpha", "1.0", "alpha", SHARED.format(owner="alpha"))
    beta = distribution(tmp_path, monkeypatch, "seqkd-beta", "2.1", "beta", SHARED.format(owner="beta"))
    registry = load_plugins([beta, alpha])
    assert [p.error for p in registry.plugins] == [None, None]
    assert registry.clashes == {("method", "shared"): ["alpha (seqkd-alpha 1.0)", "beta (seqkd-beta 2.1)"]}
    assert "shared" not in registry.methods
    assert registry.lookup("method", "only_alpha") is registry.methods["only_alpha"]  # the rest stays usable
    assert registry.lookup("method", "only_beta") is not None and registry.lookup("method", "nothing") is None
    with pytest.raises(PluginClash) as clash:
        registry.lookup("method", "shared")
    assert str(clash.value) == (
        "method 'shared' is registered by two plugins: alpha (seqkd-alpha 1.0) and beta (seqkd-beta 2.1); "
        "choose one with SEQKD_PLUGINS=<entry points to load>, e.g. SEQKD_PLUGINS=alpha"
    )
    status, out = listing(registry, monkeypatch, capsys)
    assert status == 0 and "  method:  shared  CLASH: unusable, see below" in out
    assert "CLASH: method 'shared' registered by alpha (seqkd-alpha 1.0) and beta (seqkd-beta 2.1)" in out
    assert listing(registry, monkeypatch, capsys, "--strict")[0] == 1

    monkeypatch.setenv("SEQKD_PLUGINS", "alpha")  # what the message suggests
    chosen = load_plugins([alpha, beta])
    assert not chosen.clashes and chosen.lookup("method", "shared").description == "alpha's shared"
    monkeypatch.setenv("SEQKD_PLUGINS", "beta")
    assert load_plugins([alpha, beta]).lookup("method", "shared").description == "beta's shared"


def test_a_third_party_package_taking_a_builtin_name_clashes_with_it(tmp_path, monkeypatch):
    evil = distribution(tmp_path, monkeypatch, "seqkd-evil", "1.0", "evil", """
@hookimpl
def register_methods(register):
    register(method(name="word_kd"))
""")
    registry = load_plugins()
    assert evil.name in {p.name for p in registry.plugins}
    with pytest.raises(PluginClash, match=r"^method 'word_kd' is registered by two plugins: "
                       r"word_kd \(seqkd 0\.1\.0\) and evil \(seqkd-evil 1\.0\); choose one with SEQKD_PLUGINS="):
        registry.lookup("method", "word_kd")
    suggestion = str(pytest.raises(PluginClash, registry.lookup, "method", "word_kd").value).rsplit("SEQKD_PLUGINS=", 1)[1]
    assert "evil" not in suggestion.split(",") and "word_kd" in suggestion.split(",")
    monkeypatch.setenv("SEQKD_PLUGINS", suggestion)
    assert load_plugins().lookup("method", "word_kd").__module__ == "seqkd_plugins.word_kd"


def test_lookup_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of task, method"):
        Registry().lookup("recipe", "x")


# -- the allow-list ---------------------------------------------------------------------------------


def test_allow_list_names_that_match_nothing_are_reported(tmp_path, monkeypatch, capsys):
    good = plugin(tmp_path, monkeypatch, "good", GOOD)
    monkeypatch.setenv("SEQKD_PLUGINS", "good, wrod_kd,missing")
    registry = load_plugins([good, ep("other", "tests.fixtures.broken_plugin")])
    assert registry.unmatched == ["missing", "wrod_kd"] and [p.name for p in registry.plugins] == ["good"]
    status, out = listing(registry, monkeypatch, capsys)
    assert status == 0
    assert "warning: SEQKD_PLUGINS names plugins that are not installed: missing, wrod_kd (installed: good, other)" in out
    assert listing(registry, monkeypatch, capsys, "--strict")[0] == 1
    monkeypatch.setenv("SEQKD_PLUGINS", "good")
    assert load_plugins([good]).unmatched == []
