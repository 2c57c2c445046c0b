"""``training.precision``: bf16 trains on CPU under autocast with fp32 weights and resumes exactly,
fp16 off CUDA is refused with one line, and recipes that leave precision out keep their stage hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqkd import trainer as trainer_module
from seqkd.checkpoint import safe_load
from seqkd.cli import main
from seqkd.engine import Engine
from seqkd.recipe import RecipeError, load_recipe
from seqkd.trainer import TrainingError
from tests.conftest import REPO, kill_and_resume, tiny_recipe, write_recipe

QUICKSTART = REPO / "recipes" / "bible-en-es" / "quickstart.yaml"


def metrics(stage_dir: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (stage_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def twin_stages(tmp_path: Path, method: str, precision: str, teacher: bool, steps: int) -> Path:
    """Two identical stages ``a`` and ``b`` of ``steps`` updates, checkpointed every third of them
    (one output folder, one vocabulary): ``b`` is killed and resumed, ``a`` runs straight; with
    ``teacher``, a short fp32 teacher stage first."""
    student = {"method": method, "model": "student", "evaluate": False,
               "training": {"precision": precision}, **({"teacher": "teacher"} if teacher else {})}
    stages = ([{"name": "teacher", "method": "supervised", "model": "teacher", "training": {"max_steps": 5}, "evaluate": False}]
              if teacher else [])
    r = tiny_recipe(tmp_path / "run", stages=stages + [{"name": "a", **student}, {"name": "b", **student}])
    r["task"]["data"]["max_train_pairs"] = 600
    r["training"].update(max_steps=steps, max_tokens=768, warmup_steps=5, checkpoint_every=steps // 3, validate_every=steps, log_every=steps // 3)
    return write_recipe(tmp_path / "twins.yaml", r)


def assert_b_resumed_as_a_ran(out: Path, steps: int) -> dict:
    a, b = (safe_load(out / stage / "checkpoints" / "last.pt") for stage in ("a", "b"))
    assert a["step"] == b["step"] == steps
    assert all(torch.equal(a["student"][k], b["student"][k]) for k in a["student"])
    assert [r["loss"] for r in metrics(out / "a", "train")] == [r["loss"] for r in metrics(out / "b", "train")]
    return a


def test_bf16_word_kd_trains_on_cpu_with_fp32_weights_and_resumes_exactly(tmp_path, monkeypatch):
    """The student and the teacher run in bf16 (the teacher under inference mode), the KL in fp32;
    weights and Adam moments stay fp32; a run killed in step 25 ends bit-identical to one that was not."""
    import seqkd_plugins.word_kd as word_kd

    seen: set[tuple] = set()
    token_kl = word_kd.token_kl

    def watched(student, teacher_logits, temperature):
        seen.add((student.logits.dtype, teacher_logits.dtype, teacher_logits.is_inference()))
        kd = token_kl(student, teacher_logits, temperature)
        assert kd.dtype == torch.float32
        return kd

    monkeypatch.setattr(word_kd, "token_kl", watched)
    path = twin_stages(tmp_path, "word_kd", "bf16", teacher=True, steps=30)
    # a: 30 loss calls; b killed in its 25th, after its step-20 checkpoint
    kill_and_resume(word_kd.WordKD, 30 + 25, lambda: Engine(load_recipe(path)).run(), monkeypatch)

    assert seen == {(torch.bfloat16, torch.bfloat16, True)}
    state = assert_b_resumed_as_a_ran(tmp_path / "run", 30)
    assert {v.dtype for v in state["student"].values() if v.is_floating_point()} == {torch.float32}
    moments = [t for s in state["optimizer"]["state"].values() for k, t in s.items() if k != "step"]
    assert moments and {t.dtype for t in moments} == {torch.float32}
    assert "grad_scaler" not in state  # bf16 scales nothing
    losses = [r["loss"] for r in metrics(tmp_path / "run" / "a", "train")]
    assert losses[-1] < losses[0] - 0.4, losses
    model = safe_load(tmp_path / "run" / "a" / "model.pt")["state_dict"]
    assert {v.dtype for v in model.values() if v.is_floating_point()} == {torch.float32}


def test_the_fp16_loss_scale_is_checkpointed(tmp_path, monkeypatch):
    """fp16 runs on CUDA only; forced onto the CPU here (torch's CPU autocast and GradScaler take
    float16), its loss scale is in the checkpoint and a resumed run ends bit-identical."""
    monkeypatch.setattr(trainer_module, "autocast_dtype", lambda precision, device: trainer_module.AUTOCAST_DTYPES.get(precision))
    monkeypatch.setattr("seqkd.engine.autocast_dtype", lambda precision, device: None)
    from seqkd_plugins.supervised import Supervised

    path = twin_stages(tmp_path, "supervised", "fp16", teacher=False, steps=9)
    kill_and_resume(Supervised, 9 + 8, lambda: Engine(load_recipe(path)).run(), monkeypatch)  # b resumes from step 6
    state = assert_b_resumed_as_a_ran(tmp_path / "run", 9)
    assert state["grad_scaler"]["scale"] > 0 and {v.dtype for v in state["student"].values() if v.is_floating_point()} == {torch.float32}
    assert all("loss_scale" in r for r in metrics(tmp_path / "run" / "b", "train"))


def test_fp16_without_cuda_is_refused_with_one_line(tmp_path, capsys):
    r = tiny_recipe(tmp_path / "run", stages=[{"name": "student", "method": "supervised", "model": "student"}])
    r["training"]["precision"] = "fp16"
    r["training"]["device"] = "cpu"
    path = write_recipe(tmp_path / "cpu.yaml", r)
    with pytest.raises(RecipeError, match=r"training\.precision: fp16 needs a CUDA device and training\.device is cpu; use bf16"):
        load_recipe(path)
    if torch.cuda.is_available():
        pytest.skip("device: auto trains on CUDA here")
    r["training"]["device"] = "auto"
    path = write_recipe(tmp_path / "auto.yaml", r)
    with pytest.raises(TrainingError, match=r"^training\.precision is fp16, which needs a CUDA device, but training runs on cpu \(no CUDA device is available\); use bf16 or fp32$"):
        Engine(load_recipe(path)).run()
    assert not (tmp_path / "run" / "student").exists()  # refused before the stage folder is claimed
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("fp16, which needs a CUDA device") == 1


def test_recipes_without_precision_keep_their_stage_hashes():
    """The quickstart's hashes as computed before ``training.precision`` existed (seqkd 0.1.0):
    fp32, the default, is left out of the hashed training settings. (A new seqkd version or a change
    to the recipe or its data changes these hashes legitimately; re-pin them then.)"""
    recipe = load_recipe(QUICKSTART)
    engine = Engine(recipe)
    assert "precision" not in engine.stage_parts(recipe.stage("teacher"))["training"]
    assert [engine.stage_hash(s) for s in recipe.stages] == ["5f9b622044245d2e", "5248bddd2daf73bc", "8bb987f7ff35e4f8"]
    assert load_recipe(QUICKSTART, ["training.precision=fp32"]).stage("teacher").training.model_dump() == recipe.stage("teacher").training.model_dump()
    bf16 = load_recipe(QUICKSTART, ["training.precision=bf16"])
    assert Engine(bf16).stage_hash(bf16.stage("teacher")) != "5f9b622044245d2e"
