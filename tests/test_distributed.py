"""Data parallelism on CPU: two gloo processes under torchrun against one process, on real data.

One recipe holds every stage these tests run, so all share one vocabulary: ``single`` trains in this
process with ``accumulate: 2``; ``double`` and ``resumed`` train with two processes and
``accumulate: 1``, i.e. the same global batch of two token-budget batches per update, and
``double`` is evaluated by both processes; ``seq`` and ``word`` train from teacher-output caches of
``single``'s model, which the same two processes build. Dropout is off so that the trajectories can
be compared step by step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqkd.checkpoint import safe_load
from seqkd.engine import Engine, load_trained_model
from seqkd.recipe import load_recipe
from tests.conftest import REPO, tiny_recipe, write_recipe

STEPS = 30
LAUNCH_TIMEOUT = 400  # seconds, far below the 60-minute collective timeout: a hung run fails the test
TOLERANCE = 1e-4  # relative, per step: 2 ranks sum the same gradients in another order than 1 process


def recipe_dict(out: Path) -> dict:
    student = {"name": "student", "method": "supervised", "model": "student", "evaluate": False}
    r = tiny_recipe(out, stages=[
        {**student, "name": "single", "training": {"accumulate": 2}},
        {**student, "name": "double", "evaluate": True},
        {**student, "name": "resumed"},
        {"name": "seq", "method": "seq_kd", "model": "student", "teacher": "single", "evaluate": False,
         "options": {"beam_size": 2, "batch_size": 128, "max_len_a": 0.5, "max_len_b": 5}},
        {"name": "word", "method": "word_kd", "model": "student", "teacher": "single", "evaluate": False,
         "options": {"teacher_source": "cache", "top_k": 4}},
    ])
    r["task"]["data"]["max_train_pairs"] = 2000  # about 1,100 fit max_seq_len: two n-best shards of 1024, one per rank
    r["models"]["student"]["dropout"] = 0.0
    r["training"].update(max_steps=STEPS, warmup_steps=10, log_every=1, validate_every=15, checkpoint_every=10)
    r["evaluation"].update(max_sentences=60, batch_size=8)  # 8 beam-search batches: 4 per rank
    return r


def metrics(stage_dir: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (stage_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def launch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A command in a fresh process (one thread per process, like CI's 2 cores), output captured.

    Past LAUNCH_TIMEOUT the command and every process it started are killed and the test fails.
    """
    command = [sys.executable, *args]
    proc = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    try:
        stdout, stderr = proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def torchrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return launch("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args, env=env)


class OneThread:
    """In-process runs use one thread too, so that their arithmetic is the subprocesses'."""

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.threads)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """The recipe, with its ``single`` stage trained in this process."""
    root = tmp_path_factory.mktemp("distributed")
    path = write_recipe(root / "recipe.yaml", recipe_dict(root / "run"))
    with OneThread():
        Engine(load_recipe(path)).run(only=["single"])
    return path


@pytest.fixture(scope="module")
def double(recipe) -> subprocess.CompletedProcess:
    """``double``, ``seq`` and ``word`` run by two processes (one launch: they cost less than another)."""
    stages = [arg for name in ("double", "seq", "word") for arg in ("--stage", name)]
    done = launch("-m", "seqkd", "run", str(recipe), *stages, "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def crashed(recipe) -> subprocess.CompletedProcess:
    return torchrun("tests/fail_rank.py", "run", str(recipe), "--stage", "resumed", env={"FAIL_RANK": "1", "FAIL_STEP": "25"})


def test_two_processes_follow_the_loss_trajectory_of_one(recipe, double):
    out = load_recipe(recipe).output_dir
    one, two = metrics(out / "single", "train"), metrics(out / "double", "train")
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, STEPS + 1))
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=TOLERANCE), a["step"]
    assert two[-1]["loss"] < 0.8 * two[0]["loss"]  # it learns
    valid_one, valid_two = metrics(out / "single", "valid"), metrics(out / "double", "valid")
    assert [r["nll"] for r in valid_two] == pytest.approx([r["nll"] for r in valid_one], rel=TOLERANCE)


def test_only_rank_zero_writes(recipe, double):
    folder = load_recipe(recipe).output_dir / "double"
    steps = [r["step"] for r in metrics(folder, "train")]
    assert steps == sorted(set(steps))  # one line per step: a single writer
    assert len(list((folder / "tensorboard").iterdir())) == 1
    assert json.loads((folder / "stage.json").read_text())["status"] == "done"
    assert not list(folder.rglob(".*"))  # no temporary file left behind
    assert sum(line.startswith("stage ") for line in double.stdout.splitlines()) == 1  # rank 0 prints the table


def test_evaluation_gathers_all_ranks_and_equals_one_process(recipe, double):
    loaded = load_recipe(recipe)
    folder = loaded.output_dir / "double"
    reported = json.loads((folder / "report.json").read_text())["metrics"]
    engine = Engine(loaded)
    engine.task()
    model = load_trained_model(engine.task(), folder / "model.pt")[0]
    with OneThread():
        alone, predictions = engine.score_model(engine.task(), model, loaded.only_task().evaluation)
    assert reported["sentences"] == alone["sentences"] == 60
    assert (reported["bleu"], reported["chrf"]) == (alone["bleu"], alone["chrf"])
    hypotheses = (folder / "predictions.valid.txt").read_text()
    assert hypotheses == "".join(line + "\n" for line in predictions)
    assert len(set(hypotheses.splitlines())) > 1  # not all alike, so the order was checked too


def test_a_failing_rank_stops_the_run_with_its_error(crashed):
    # Returning at all (within LAUNCH_TIMEOUT) shows that rank 0 did not wait for its peer.
    assert crashed.returncode != 0
    assert "injected failure on rank 1 at step 25" in crashed.stderr


def test_a_killed_two_process_run_resumes(recipe, double, crashed):
    out = load_recipe(recipe).output_dir
    assert safe_load(out / "resumed" / "checkpoints" / "last.pt")["step"] == 20
    done = launch("-m", "seqkd", "run", str(recipe), "--stage", "resumed", "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from step 20" in done.stderr
    straight, resumed = metrics(out / "double", "train"), metrics(out / "resumed", "train")
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in straight], rel=1e-6)
    wa = safe_load(out / "double" / "model.pt")["state_dict"]
    wb = safe_load(out / "resumed" / "model.pt")["state_dict"]
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-6


def test_a_two_process_cache_build_equals_a_one_process_build(recipe, double):
    out = load_recipe(recipe).output_dir
    (out / "_cache").rename(out / "_cache_two")
    with OneThread():
        Engine(load_recipe(recipe)).build_caches(["seq", "word"])
    for kind in ("seq/nbest", "word/topk"):
        one, two = out / "_cache" / kind, out / "_cache_two" / kind
        files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
        assert len([f for f in files if f.name == "done.json"]) == (2 if kind == "seq/nbest" else 1)
        for name in files:
            assert (one / name).read_bytes() == (two / name).read_bytes(), name
    distilled = "seq/distilled.train.txt"
    assert (out / "_cache" / distilled).read_text() == (out / "_cache_two" / distilled).read_text()


class Numbers:
    """An endless reader of 0, 1, 2, ... whose state is the next number."""

    def __init__(self) -> None:
        self.next = 0

    def __iter__(self):
        while True:
            self.next += 1
            yield self.next - 1

    def state_dict(self) -> dict:
        return {"next": self.next}

    def load_state_dict(self, state: dict) -> None:
        self.next = state["next"]


def test_ranks_share_one_batch_stream_and_one_reader_state(monkeypatch):
    from seqkd import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    seen, states = [], []
    for rank in range(3):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        shard = distributed.RankShard(Numbers())
        batches = iter(shard)
        seen.append([next(batches) for _ in range(4)])  # four batches of this rank
        states.append(shard.state_dict())
    assert seen == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    assert states == [{"next": 12}] * 3  # any rank's checkpoint of the reader resumes them all


def _reduce_worker(rank: int, init_file: str, sync: str, results: dict) -> None:
    """One of two gloo ranks: a net whose ``middle`` layer only rank 0 uses and whose ``unused`` layer
    no rank uses; three updates of two micro-batches each; a bucket per layer."""
    import torch.distributed as dist

    from seqkd import distributed

    os.environ[distributed.SYNC_ENV] = sync
    distributed.BUCKET_ELEMENTS = 20  # a 4x4 weight and its bias
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    net = torch.nn.ModuleDict({name: torch.nn.Linear(4, 4) for name in ("first", "middle", "last", "unused")})
    params = list(net.parameters())
    reducer = distributed.GradientReducer(params)
    torch.manual_seed(rank + 1)
    grads, early = [], []
    for _ in range(3):
        for p in params:
            p.grad = None
        for micro in range(2):
            h = net["first"](torch.randn(3, 4))
            if rank == 0:
                h = net["middle"](h)
            if micro == 1:
                reducer.arm()
            net["last"](h).square().sum().backward()
        early.append(len(reducer.started))  # buckets summing before backward returned
        reducer.finish()
        grads.append([None if p.grad is None else p.grad.clone() for p in params])
    reducer.close()
    results[rank] = (grads, early)
    dist.destroy_process_group()


def _reduced_gradients(tmp_path: Path, sync: str) -> dict:
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_reduce_worker, args=(str(tmp_path / f"init-{sync}"), sync, results), nprocs=2)
    return dict(results)


def test_gradient_sums_overlapped_with_backward_equal_sums_after_it(tmp_path):
    overlapped, after = _reduced_gradients(tmp_path, "overlap"), _reduced_gradients(tmp_path, "after_backward")
    names = [f"{layer}.{kind}" for layer in ("first", "middle", "last", "unused") for kind in ("weight", "bias")]
    for update in range(3):
        for name, a, b, c in zip(names, overlapped[0][0][update], overlapped[1][0][update], after[0][0][update]):
            if name.startswith("unused"):
                assert a is None and b is None and c is None, name  # no rank reached it: the optimizer skips it
                continue
            assert a is not None and torch.equal(a, b), name  # every rank holds the same sum
            assert torch.equal(a, c), name  # the overlap changes when the sums run, not what they are
        assert overlapped[1][0][update][names.index("middle.weight")].abs().sum() > 0  # rank 1 holds rank 0's
    # First update: the unused layer's bucket comes first and holds every bucket back. Then it is out
    # of the buckets; rank 0 sums all three layers during backward, rank 1 only the last layer (the
    # middle one, which it never reaches, holds the rest back until backward ends).
    assert overlapped[0][1] == [0, 3, 3] and overlapped[1][1] == [0, 1, 1]
    assert after[0][1] == after[1][1] == [0, 0, 0]
