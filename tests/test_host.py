"""The plugin host: entry points, allow-list, broken plugins, duplicate names."""

from __future__ import annotations

import importlib.metadata
import random
import subprocess
import sys

import pytest

from seqkd.plugins import ENTRY_POINT_GROUP, load_plugins
from tests.conftest import REPO


def ep(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def installed() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


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


def test_duplicate_method_name_is_refused_naming_the_first_owner():
    registry = load_plugins(installed() + [ep("zz_duplicate", "tests.fixtures.duplicate_plugin")])
    dup = next(p for p in registry.plugins if p.name == "zz_duplicate")
    assert dup.error is not None and "'word_kd' is already registered by plugin 'word_kd'" in dup.error
    assert registry.methods["word_kd"].__module__ == "seqkd_plugins.word_kd"


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
    assert reference.methods["word_kd"].__module__ == "seqkd_plugins.word_kd"


def test_verbose_listing_shows_file_and_hooks(capsys):
    from seqkd.cli import main

    assert main(["plugins", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert f"file:    {REPO / 'plugins' / 'word_kd' / '__init__.py'}" in out
    assert "hooks:   register_tasks" in out and "hooks:   register_methods" in out
