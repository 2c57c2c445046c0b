"""Shared fixtures: a tiny recipe on a real subset of the Bible en-es corpus, trained once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "bible-en-es" / "bible-en-es.tsv.gz"


def tiny_recipe(output_dir: Path, **changes) -> dict:
    """A recipe small enough for CI: a 1-1 teacher and a 1-1 student on 3,000 real pairs."""
    recipe = {
        "description": "tiny test recipe",
        "task": {
            "name": "translation", "source_lang": "en", "target_lang": "es",
            "data": {"corpus": str(CORPUS), "max_train_pairs": 3000},
            "vocab_size": 1000, "max_seq_len": 48,
        },
        "models": {
            "teacher": {"encoder_layers": 1, "decoder_layers": 1, "encoder_dim": 96, "encoder_ffn_dim": 192, "encoder_heads": 4},
            "student": {"encoder_layers": 1, "decoder_layers": 1, "encoder_dim": 48, "encoder_ffn_dim": 96, "encoder_heads": 4},
        },
        "training": {
            "max_steps": 250, "max_tokens": 1536, "lr": 3e-3, "warmup_steps": 50,
            "log_every": 25, "validate_every": 125, "checkpoint_every": 125,
        },
        "evaluation": {"beam_size": 2, "max_sentences": 150, "split": "valid"},
        "output": {"dir": str(output_dir)},
        "stages": [
            {"name": "teacher", "method": "supervised", "model": "teacher"},
            {"name": "word_kd", "method": "word_kd", "model": "student", "teacher": "teacher",
             "training": {"max_steps": 200}, "options": {"alpha": 0.5, "temperature": 1.0}},
            {"name": "seq_kd", "method": "seq_kd", "model": "student", "teacher": "teacher",
             "training": {"max_steps": 200},
             "options": {"beam_size": 2, "nbest": 2, "seq_inter": True, "batch_size": 128}},
        ],
    }
    for key, value in changes.items():
        recipe[key] = value
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The tiny recipe run once end to end: (recipe path, stage reports)."""
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    root = tmp_path_factory.mktemp("tiny")
    path = write_recipe(root / "tiny.yaml", tiny_recipe(root / "run"))
    reports = Engine(load_recipe(path)).run()
    return path, reports


class Interrupt(Exception):
    """Stands in for a kill in the middle of a training step."""


def kill_and_resume(method_cls: type, kill_at: int, run: Callable[[], object], monkeypatch,
                    after_kill: Callable[[], None] = lambda: None) -> None:
    """Run ``run`` with ``method_cls.loss`` dying at its ``kill_at``-th call, then run it again whole."""
    original = method_cls.loss
    calls = {"n": 0}

    def dying(self, batch, step):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise Interrupt()
        return original(self, batch, step)

    monkeypatch.setattr(method_cls, "loss", dying)
    with pytest.raises(Interrupt):
        run()
    after_kill()
    monkeypatch.setattr(method_cls, "loss", original)
    run()
