"""The teacher-output cache: exact round trips, refused mismatches, resumable atomic builds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from seqkd.cache import Artifact, CacheError, build_artifact
from seqkd.engine import Engine
from seqkd.errors import DataError
from seqkd.fileio import atomic_write_text
from seqkd.method import StageContext, Teacher
from seqkd.recipe import load_recipe
from seqkd.teacher_outputs import TopK, build_topk
from seqkd_plugins.seq_kd import seq_inter_choice
from seqkd.losses import token_kl, topk_kl
from seqkd_plugins.word_kd import WordKD, WordKDOptions
from seqkd.tasks.base import TokenLogits

PARTS = {"teacher": "t1", "settings": "k=2", "vocabulary": "v1", "data": "d1"}


def shard_of_squares(start: int, stop: int) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, stop, dtype=np.int64) ** 2, "y": np.full((stop - start, 2), start, dtype=np.float16)}


def build(folder: Path, parts=PARTS, make_shard=shard_of_squares) -> Artifact:
    return build_artifact(folder, "demo", parts, 10, 3, make_shard, meta={"n": 10})


def test_round_trip_and_key_mismatch_names_what_changed(tmp_path):
    artifact = build(tmp_path / "c")
    assert [artifact.shard(i).arrays["x"].tolist() for i in range(4)] == [[0, 1, 4], [9, 16, 25], [36, 49, 64], [81]]
    assert artifact.shard_of(7).start == 6
    with pytest.raises(CacheError, match=r"teacher: cache has 't1', this run needs 't2'"):
        Artifact.open(tmp_path / "c", "demo", {**PARTS, "teacher": "t2"})
    with pytest.raises(CacheError, match="teacher: cache has 't1'"):
        build(tmp_path / "c", {**PARTS, "teacher": "t2"})  # a stale cache is never silently reused


class Killed(Exception):
    pass


def test_killed_build_leaves_nothing_readable_and_resumes_to_the_same_cache(tmp_path):
    calls = []

    def dies_on_third_shard(start, stop):
        calls.append(start)
        if start == 6:
            raise Killed()
        return shard_of_squares(start, stop)

    with pytest.raises(Killed):
        build(tmp_path / "c", make_shard=dies_on_third_shard)
    with pytest.raises(CacheError, match="no finished cache here .*unfinished build"):
        Artifact.read(tmp_path / "c")
    calls.clear()

    def counting(start, stop):
        calls.append(start)
        return shard_of_squares(start, stop)

    resumed = build(tmp_path / "c", make_shard=counting)
    assert calls == [6, 9]  # shards 0 and 1 were kept
    straight = build(tmp_path / "straight")
    for i in range(4):
        for name in ("x", "y"):
            assert np.array_equal(resumed.shard(i).arrays[name], straight.shard(i).arrays[name])
    a = json.loads((tmp_path / "c" / "manifest.json").read_text())["shards"]
    b = json.loads((tmp_path / "straight" / "manifest.json").read_text())["shards"]
    assert a == b  # byte-identical shard files


def test_truncated_and_corrupted_shards_are_refused(tmp_path):
    build(tmp_path / "c")
    shard = tmp_path / "c" / "shard-00001" / "x.npy"
    data = shard.read_bytes()
    shard.write_bytes(data[:-8])
    with pytest.raises(CacheError, match="truncated or altered"):
        Artifact.open(tmp_path / "c", "demo", PARTS)
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(CacheError, match="corrupted"):
        Artifact.open(tmp_path / "c", "demo", PARTS)


def test_seq_inter_picks_the_best_sentence_bleu(tiny_task_and_teacher):
    task, _ = tiny_task_and_teacher
    reference = "and God said, let there be light, and there was light."
    hypotheses = ["and God spoke.", "and God said, let there be light, and there was light!", "light was there."]
    assert seq_inter_choice(task, hypotheses, reference) == 1
    assert seq_inter_choice(task, ["same", "same"], "same") == 0  # ties keep the higher-scored hypothesis


def test_topk_kd_with_k_equal_to_vocabulary_equals_online_kd():
    torch.manual_seed(0)
    s, t = torch.randn(3, 6, 50), torch.randn(3, 6, 50) * 3
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[2, 4:] = False
    out = TokenLogits(s, torch.zeros(3, 6, dtype=torch.long), mask)
    T = 2.0
    values, indices = torch.log_softmax(t / T, -1).topk(50, dim=-1)
    values = values.half().float()  # what the cache stores
    offline = topk_kl(out, values, indices, T)
    assert offline.item() == pytest.approx(token_kl(out, t, T).item(), rel=2e-3)
    # with k < V the tail mass keeps the loss a proper KL: zero when the student equals the teacher
    v8, i8 = torch.log_softmax(t / T, -1).topk(8, dim=-1)
    assert topk_kl(TokenLogits(t, out.targets, mask), v8, i8, T).abs().item() < 1e-4


def context(tmp_path: Path, teacher_id: str = "teacher-a", rebuild: bool = False) -> StageContext:
    return StageContext(cache_dir=tmp_path / "cache", teacher_ids=[teacher_id], max_tokens=1024,
                        device=torch.device("cpu"), rebuild=rebuild, log=lambda _: None, write_text=atomic_write_text)


@pytest.fixture(scope="module")
def tiny_task_and_teacher(trained_run):
    path, _ = trained_run
    engine = Engine(load_recipe(path))
    engine.task()
    from seqkd.engine import load_trained_model

    teacher = load_trained_model(engine.task(), engine.stage_dir("teacher") / "model.pt")[0]
    return engine.task(), teacher


def test_topk_cache_round_trip_matches_the_teacher(tiny_task_and_teacher, tmp_path, monkeypatch):
    task, teacher = tiny_task_and_teacher
    monkeypatch.setattr(task, "num_examples", lambda split: 200)  # cache only the first 200 examples
    topk = TopK(build_topk(task, Teacher.from_model(teacher), context(tmp_path), k=8, temperature=2.0))
    teacher.eval()
    batch = task.indexed_batches("train", 0, 200, 1024)[0]
    with torch.no_grad():
        out = task.forward(teacher, batch)
    want_v, want_i = torch.log_softmax(out.logits / 2.0, -1).topk(8, dim=-1)
    got_v, got_i = topk.batch(batch.indices.tolist(), out.logits.shape[1], task.vocab_size)
    m = out.mask
    assert torch.equal(got_i[m], want_i[m])
    assert torch.allclose(got_v[m], want_v[m].half().float(), atol=0)  # exact within fp16
    with pytest.raises(CacheError, match="vocabulary of 1000, the student's has 800"):
        topk.batch(batch.indices.tolist(), out.logits.shape[1], 800)
    with pytest.raises(CacheError, match="teacher: cache has 'teacher-a', this run needs 'teacher-b'"):
        build_topk(task, Teacher.from_model(teacher), context(tmp_path, "teacher-b"), k=8, temperature=2.0)
    with pytest.raises(CacheError, match="settings"):
        build_topk(task, Teacher.from_model(teacher), context(tmp_path), k=4, temperature=2.0)
    rebuilt = build_topk(task, Teacher.from_model(teacher), context(tmp_path, "teacher-b", rebuild=True), k=8, temperature=2.0)
    assert rebuilt.manifest["parts"]["teacher"] == "teacher-b"


def test_cached_word_kd_with_full_k_equals_online_word_kd(tiny_task_and_teacher, tmp_path, monkeypatch):
    task, teacher = tiny_task_and_teacher
    monkeypatch.setattr(task, "num_examples", lambda split: 40)
    torch.manual_seed(0)
    student = task.build_model(task.model_schema(encoder_layers=1, decoder_layers=1, encoder_dim=32,
                                                 encoder_ffn_dim=64, encoder_heads=4, dropout=0.0))
    options = dict(alpha=0.5, temperature=1.5)
    online = WordKD(WordKDOptions(**options), task, student, [Teacher.from_model(teacher)], 0.1)
    cached = WordKD(WordKDOptions(**options, teacher_source="cache", top_k=task.vocab_size), task, student, [Teacher.from_model(teacher)], 0.1)
    cached.prepare(context(tmp_path))
    student.eval()
    batch = task.indexed_batches("train", 0, 40, 4096)[0]
    a, b = online.loss(batch, 0), cached.loss(batch, 0)
    assert b.parts["kd"] == pytest.approx(a.parts["kd"], rel=2e-3)
    assert b.loss.item() == pytest.approx(a.loss.item(), rel=2e-3)


def test_empty_distilled_corpus_is_refused(tiny_task_and_teacher):
    task, _ = tiny_task_and_teacher
    with pytest.raises(DataError, match="replacement training targets are empty"):
        task.train_reader(1024, 0, [{0: [], 1: []}])


def test_cache_commands(trained_run, tmp_path, capsys):
    from seqkd.cli import main

    path, _ = trained_run
    recipe = load_recipe(path)
    folder = recipe.output_dir / "_cache" / "seq_kd" / "nbest"
    assert main(["cache", "info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "kind:    nbest" in out and "teacher:" in out
    assert main(["cache", "verify", str(folder)]) == 0
    copy = tmp_path / "nbest"
    shutil.copytree(folder, copy)
    victim = next(copy.glob("shard-*/tokens.npy"))
    victim.write_bytes(victim.read_bytes()[:-4])
    assert main(["cache", "verify", str(copy)]) == 2
    assert "truncated" in capsys.readouterr().err


def test_a_teacher_whose_outputs_are_cached_is_never_loaded(tiny_task_and_teacher, tmp_path, monkeypatch):
    task, teacher = tiny_task_and_teacher
    monkeypatch.setattr(task, "num_examples", lambda split: 40)
    build_topk(task, Teacher.from_model(teacher), context(tmp_path), k=8, temperature=1.0)

    def never():
        raise AssertionError("the teacher was loaded")

    lazy = Teacher("teacher", "teacher-a", never)
    student = task.build_model(task.model_schema(encoder_layers=1, decoder_layers=1, encoder_dim=32,
                                                 encoder_ffn_dim=64, encoder_heads=4))
    method = WordKD(WordKDOptions(teacher_source="cache", top_k=8), task, student, [lazy], 0.1)
    method.prepare(context(tmp_path))
    assert method.loss(task.indexed_batches("train", 0, 40, 4096)[0], 0).loss.isfinite()
    assert not lazy.loaded
