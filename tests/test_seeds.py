"""``seqkd run --seeds``: every stage once per seed (shared stages once), one summary file with
mean ± std and paired differences, resumable like any run."""

from __future__ import annotations

import json

import pytest

from seqkd.cli import main
from seqkd.recipe import load_recipe
from seqkd.seeds import expand
from tests.conftest import tiny_recipe, write_recipe


def test_expand_renames_per_seed_and_keeps_shared_stages_once():
    raw = {"stages": [{"name": "teacher"}, {"name": "student", "teacher": "teacher"}, {"name": "ft", "init": "student", "teachers": ["teacher", "student"]}]}
    expanded, origin = expand(raw, [1, 2], {"teacher"})
    assert [s["name"] for s in expanded["stages"]] == ["teacher", "student-s1", "ft-s1", "student-s2", "ft-s2"]
    ft2 = expanded["stages"][4]
    assert ft2["init"] == "student-s2" and ft2["teachers"] == ["teacher", "student-s2"] and ft2["training"]["seed"] == 2
    assert origin["ft-s2"] == "ft" and origin["teacher"] == "teacher"


def test_run_with_seeds_writes_one_summary_and_resumes(trained_run, tmp_path, capsys):
    run_dir = load_recipe(trained_run[0]).output_dir  # the trained teacher is shared and reused
    r = tiny_recipe(run_dir)
    r["stages"] = [
        r["stages"][0],
        {"name": "baseline", "method": "supervised", "model": "student", "training": {"max_steps": 40}},
        {"name": "word_kd", "method": "word_kd", "model": "student", "teacher": "teacher", "training": {"max_steps": 40}},
    ]
    r["evaluation"]["max_sentences"] = 40
    path = write_recipe(tmp_path / "seeds.yaml", r)
    args = ["run", str(path), "--seeds", "1,2", "--shared", "teacher", "--baseline", "baseline"]
    assert main(args) == 0
    summary = json.loads((run_dir / "seeds.json").read_text())
    assert summary["seeds"] == [1, 2] and len(summary["stages"]["teacher"]["seeds"]) == 1
    baseline, kd = summary["stages"]["baseline"], summary["stages"]["word_kd"]
    assert [s["seed"] for s in kd["seeds"]] == [1, 2] and kd["seeds"][0]["bleu"] != kd["seeds"][1]["bleu"]  # the seed matters
    assert kd["mean"]["bleu"] == pytest.approx(sum(s["bleu"] for s in kd["seeds"]) / 2, abs=1e-3)
    diffs = summary["paired"]["word_kd"]["per_seed"]
    assert [d["bleu"] for d in diffs] == pytest.approx([a["bleu"] - b["bleu"] for a, b in zip(kd["seeds"], baseline["seeds"])], abs=1e-3)
    assert "word_kd" in capsys.readouterr().out
    before = (run_dir / "word_kd-s2" / "model.pt").stat().st_mtime_ns
    assert main(args) == 0  # a second run reuses every stage
    assert (run_dir / "word_kd-s2" / "model.pt").stat().st_mtime_ns == before


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own refusals
        return exc.code


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "1,x"], "is not a comma-separated list of whole numbers"),
    (["--seeds", "1,1"], "give distinct seeds"),
    (["--seeds", "1,2", "--shared", "techer"], "--shared names no stage of the recipe: techer"),
    (["--seeds", "1,2", "--dry-run"], "cannot be combined with --dry-run"),
])
def test_bad_seed_options_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "run"))
    assert exit_code(["run", str(path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
