"""Runs a recipe's stages in order, each in ``<output>/<stage>/``.

A stage folder holds ``stage.json`` (hash and status), ``config.yaml`` (the resolved recipe),
``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``, ``model.pt``, the evaluation report and,
with ``outputs:``, the model's predictions on whole splits (``outputs/<split>.txt``). A stage whose
hash (config + data + teachers + upstream stages) matches a finished folder is reused, so one
teacher serves many student recipes; a matching unfinished folder is resumed; a folder of another
config is only replaced with ``force``. A run holds a lock on its output folder.

Tasks are built on first use: a task that reads another task's stage outputs as an input view is
prepared only once that stage has written them.

The engine owns distribution (docs/distributed.md): every rank runs the same stages; prediction is
sharded over ranks in fixed chunks and gathered; rank 0 alone claims folders and writes status,
configs, model files, predictions and reports, through ``distributed.on_main``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ValidationError

import seqkd
from seqkd import distributed
from seqkd.checkpoint import CheckpointError, load_model_file, save_model
from seqkd.errors import SeqkdError
from seqkd.fileio import CorruptFileError, FolderLock, atomic_write_json, atomic_write_text, read_json
from seqkd.hashing import file_sha256
from seqkd.method import Method, StageContext, Teacher
from seqkd.recipe import Recipe, Stage, TeacherRef
from seqkd.tasks.base import TaskAdapter
from seqkd.trainer import Trainer, autocast_dtype, pick_device

PREDICT_CHUNK = 256  # inputs per prediction call; ranks take every W-th chunk, so results do not depend on W


class StageConflict(SeqkdError):
    pass


@dataclass
class StagePlan:
    """What running a stage would do, and why (``seqkd run --dry-run`` prints these)."""

    stage: str
    action: str  # reuse | resume | train | retrain | refuse
    reason: str


@dataclass
class StageReport:
    name: str
    task: str
    method: str
    model: str
    parameters: int
    reused: bool
    metrics: dict[str, Any]


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_model_file(task: TaskAdapter, path: Path, *, same_output_space: bool = True, mmap: bool = False) -> dict[str, Any]:
    """The model file's contents, refused if it cannot serve ``task`` (with the task's vocabulary /
    tag set, where ``same_output_space``); ``mmap`` reads only what the check needs."""
    data = load_model_file(path, mmap=mmap)
    if data["task"] != task.name:
        raise CheckpointError(f"{path}: a {data['task']!r} model cannot serve the {task.name!r} task")
    if same_output_space and data["vocabulary"] != task.vocabulary_id():
        raise CheckpointError(
            f"{path}: the model's vocabulary ({data['vocabulary']}) differs from this recipe's "
            f"({task.vocabulary_id()}); teacher and student must share one vocabulary for this method"
        )
    return data


def load_trained_model(task: TaskAdapter, path: Path, *, same_output_space: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model from a seqkd model file (weights only) for ``task``, with its output space.

    With ``same_output_space`` the model must have the task's vocabulary / tag set; otherwise it is
    rebuilt over the output space its file records (a teacher trained on other labels).
    """
    data = check_model_file(task, path, same_output_space=same_output_space)
    space = data.get("output_space") or {"vocabulary": data["vocabulary"]}
    try:
        config = task.model_schema.model_validate(data["model_config"])
        model = task.build_model(config, None if same_output_space else space)
        model.load_state_dict(data["state_dict"])
    except (ValidationError, RuntimeError, SeqkdError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: its model config and weights do not fit this task's model ({first})") from None
    return model, space


def _log(stage: str, text: str) -> None:
    if distributed.is_main():  # one copy of each line, however many processes
        print(f"[{stage}] {text}", file=sys.stderr, flush=True)


def _write_once(path: Path, text: str) -> None:
    """Write a text file from rank 0 only (every rank returns once it exists)."""
    distributed.on_main(lambda: atomic_write_text(path, text))


class Engine:
    def __init__(self, recipe: Recipe, *, force: bool = False, force_stages: list[str] | None = None) -> None:
        """``force`` replaces folders of another configuration; ``force_stages`` retrains the named
        stages even where their folder could be reused."""
        self.recipe = recipe
        self.force = force
        self.force_stages = set(force_stages or [])
        self._tasks: dict[str, TaskAdapter] = {}
        self._prepared: set[str] = set()
        self._parts: dict[str, dict[str, Any]] = {}
        self._hashes: dict[str, str] = {}
        self._file_ids: dict[Path, str] = {}

    # -- tasks and hashes ---------------------------------------------------------------------

    def task(self, key: str | None = None) -> TaskAdapter:
        """The prepared adapter of task ``key`` (of the only task, without one), built on first use."""
        key = key if key is not None else self.recipe.only_task().key
        task = self._adapter(key)
        if key not in self._prepared:
            distributed.main_first(task.prepare)
            self._prepared.add(key)
        return task

    def _adapter(self, key: str) -> TaskAdapter:
        """Task ``key``'s adapter, not yet prepared: its fingerprint needs no vocabulary, so a stage's
        claim is settled before anything is built."""
        if key not in self._tasks:
            spec = self.recipe.tasks[key]
            views = {view: self.stage_dir(stage) / "outputs" for view, stage in spec.reads.items()}
            task = spec.cls(spec.config, self.recipe.output_dir / "_shared", self.recipe.path.parent, views)
            # tasks whose vocabulary it reads, prepared first (its fingerprint hashes that vocabulary)
            task.sources = {source: self.task(source) for source in spec.cls.vocabulary_sources(spec.config).values()}
            self._tasks[key] = task
        return self._tasks[key]

    def stage_dir(self, name: str) -> Path:
        return self.recipe.output_dir / name

    def _file_id(self, path: Path) -> str:
        if path not in self._file_ids:
            self._file_ids[path] = file_sha256(path)[:16]
        return self._file_ids[path]

    def stage_parts(self, stage: Stage) -> dict[str, Any]:
        """What the stage's model depends on, by part: its task's data, the stages upstream, the
        method and the code that runs it, the model, training and options. ``stage.json`` keeps
        them, so a refusal can say which part differs."""
        if stage.name not in self._parts:
            spec = self.recipe.tasks[stage.task]
            upstream = lambda name: self.stage_hash(self.recipe.stage(name))  # noqa: E731
            self._parts[stage.name] = json.loads(json.dumps({
                "data": self._adapter(stage.task).fingerprint(),
                "reads": {view: upstream(source) for view, source in spec.reads.items()},
                "method": stage.method.name,
                "code": {"seqkd": seqkd.__version__, "task": stage.task_origin, "method": stage.method_origin},
                "model": stage.model.model_dump(),
                "training": stage.training.model_dump(exclude={"log_every", "device"}),
                "options": stage.options.model_dump(),
                "teachers": [upstream(t.stage) if t.stage else self._file_id(t.checkpoint) for t in stage.teachers],
                "init": upstream(stage.init) if stage.init else None,
                **({"init_layers": stage.init_layers} if stage.init_layers else {}),
            }, default=str))
        return self._parts[stage.name]

    def stage_hash(self, stage: Stage) -> str:
        if stage.name not in self._hashes:
            self._hashes[stage.name] = _digest(self.stage_parts(stage))
        return self._hashes[stage.name]

    # -- running ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        """Hold the output folder's lock (rank 0) while stages run."""
        lock = FolderLock(self.recipe.output_dir) if distributed.is_main() else None

        def acquire() -> None:  # the other ranks wait, and fail with rank 0 if the folder is taken
            lock.acquire()

        distributed.on_main(acquire)
        try:
            yield
        finally:
            if lock is not None:
                lock.release()

    def _selected(self, only: list[str] | None) -> list[Stage]:
        names = [s.name for s in self.recipe.stages]
        unknown = [name for name in only or [] if name not in names]
        if unknown:
            raise StageConflict(f"{self.recipe.path}: no stage {', '.join(map(repr, unknown))} (stages: {', '.join(names)})")
        return [s for s in self.recipe.stages if not only or s.name in only]

    def run(self, only: list[str] | None = None) -> list[StageReport]:
        stages = self._selected(only)
        with self._locked():
            return [self.run_stage(stage) for stage in stages]

    def build_caches(self, only: list[str] | None = None) -> list[Path]:
        """Build the teacher-output caches of the stages that use them, without training."""
        built = []
        with self._locked():
            for stage in self._selected(only):
                if not stage.teachers:
                    continue
                self._check_inputs(stage)
                task = self.task(stage.task)
                self.prepare_method(stage, task.build_model(stage.model), pick_device(stage.training.device))
                folder = self.recipe.output_dir / "_cache" / stage.name
                if folder.exists():
                    built.append(folder)
        return built

    def _check_inputs(self, stage: Stage) -> None:
        """Refuse a stage whose teachers or starting point are not trained, before touching its folder."""
        needed = [(t.stage, self._teacher_file(t), "teacher") for t in stage.teachers]
        if stage.init:
            needed.append((stage.init, self.stage_dir(stage.init) / "model.pt", "starting point"))
        for source, path, role in needed:
            if not path.exists():
                hint = f"run stage {source!r} first" if source else "the model file is gone; check the path"
                raise StageConflict(f"stage {stage.name!r}: its {role} {path} is not trained yet; {hint}")
        task = self.task(stage.task)
        for ref in stage.teachers:  # refused now rather than at the first step that reads the teacher
            check_model_file(task, self._teacher_file(ref), same_output_space=stage.method.same_output_space, mmap=True)

    def plan_stage(self, stage: Stage) -> StagePlan:
        """Reuse, resume, train, retrain or refuse the stage's folder, and why; reads, writes nothing."""
        folder = self.stage_dir(stage.name)
        forced = self.force or stage.name in self.force_stages
        status_path = folder / "stage.json"
        if not status_path.exists():
            if folder.exists() and any(folder.iterdir()):
                why = f"{folder} exists and is not a seqkd stage folder"
                return StagePlan(stage.name, "retrain" if forced else "refuse", why + ("" if forced else "; use --force to replace it"))
            return StagePlan(stage.name, "train", "not trained yet")
        try:
            status = read_json(status_path, "stage status", fix="use --force to retrain the stage")
        except CorruptFileError as exc:
            return StagePlan(stage.name, "retrain" if forced else "refuse", str(exc))
        if stage.name in self.force_stages:
            return StagePlan(stage.name, "retrain", "--force-stage names it")
        if status.get("hash") == self.stage_hash(stage):
            if status.get("status") == "done" and (folder / "model.pt").exists():
                return StagePlan(stage.name, "reuse", "finished, with the same configuration")
            return StagePlan(stage.name, "resume", "unfinished, with the same configuration: continues from its last checkpoint")
        why = (f"{folder} holds stage {stage.name!r} of a different configuration (written by {status.get('recipe')}): "
               + _differences(status.get("parts"), self.stage_parts(stage)))
        if forced:
            return StagePlan(stage.name, "retrain", why)
        return StagePlan(stage.name, "refuse", why + (
            f"; to use that model as a teacher, name it with `teacher_checkpoint: {folder / 'model.pt'}`; "
            f"to keep both, set output.dir; `--force-stage {stage.name}` retrains it (`--force` any such stage)"))

    def plan(self, only: list[str] | None = None) -> list[StagePlan]:
        """Every selected stage's plan, as a run would find it now (stages before it not run yet)."""
        plans = []
        for stage in self._selected(only):
            try:
                plans.append(self.plan_stage(stage))
            except SeqkdError as exc:  # e.g. its input view is written by a stage that has not run
                plans.append(StagePlan(stage.name, "train", f"after the stages it depends on ({exc})"))
        return plans

    def _claim(self, stage: Stage, folder: Path) -> dict[str, Any] | None:
        """Return the stage's existing status if it may be reused or resumed; refuse a stranger's folder."""
        plan = self.plan_stage(stage)
        if plan.action == "refuse":
            raise StageConflict(plan.reason)
        if plan.action == "retrain":
            shutil.rmtree(folder)
        if plan.action in ("reuse", "resume"):
            return read_json(folder / "stage.json", "stage status")
        return None

    def _open_stage(self, stage: Stage, folder: Path) -> bool:
        """Claim the stage's folder; True if its finished model is reused, else it is marked running."""
        status = self._claim(stage, folder)
        folder.mkdir(parents=True, exist_ok=True)
        if status is not None and status["status"] == "done" and (folder / "model.pt").exists():
            return True
        self._write_status(folder, stage, "running")
        atomic_write_text(folder / "config.yaml", yaml.safe_dump(self._stage_config(stage), sort_keys=False))
        return False

    def run_stage(self, stage: Stage) -> StageReport:
        folder = self.stage_dir(stage.name)
        plan = distributed.on_main(lambda: self.plan_stage(stage))  # settled before anything is built
        if plan.action == "refuse":
            raise StageConflict(plan.reason)
        if plan.action != "reuse":  # a precision the device cannot train in is refused before the folder is claimed
            autocast_dtype(stage.training.precision, pick_device(stage.training.device))
        self._check_inputs(stage)
        reused = distributed.on_main(lambda: self._open_stage(stage, folder))
        if not reused:
            self._train(stage, folder)
            distributed.on_main(lambda: self._write_status(folder, stage, "done"))
        task = self.task(stage.task)
        model, _ = load_trained_model(task, folder / "model.pt")
        model.to(pick_device(stage.training.device))
        if stage.outputs:
            self._write_outputs(stage, task, model, folder)
        metrics = self._evaluate(stage, task, model, folder) if stage.evaluate else {}
        return StageReport(stage.name, stage.task, stage.method.name, stage.model_role, count_parameters(model), reused, metrics)

    def trained_model(self, name: str) -> tuple[Stage, TaskAdapter, torch.nn.Module]:
        """A finished stage's model with its prepared task, for commands that serve it."""
        stage = self.recipe.stage(name)
        path = self.stage_dir(name) / "model.pt"
        if not path.exists():
            raise StageConflict(f"{path}: stage {name!r} has not been trained; run `seqkd run {self.recipe.path} --stage {name}` first")
        task = self.task(stage.task)
        model, _ = load_trained_model(task, path)
        return stage, task, model

    # -- methods and training -----------------------------------------------------------------

    def _teacher_file(self, ref: TeacherRef) -> Path:
        return self.stage_dir(ref.stage) / "model.pt" if ref.stage is not None else ref.checkpoint

    def teachers(self, stage: Stage, device: torch.device) -> list[Teacher]:
        """The stage's teachers, each loaded only when a method first reads its model."""
        task = self.task(stage.task)
        same = stage.method.same_output_space

        def loader(path: Path):
            def load() -> tuple[torch.nn.Module, dict[str, Any]]:
                model, space = load_trained_model(task, path, same_output_space=same)
                return model.to(device), space
            return load

        return [
            Teacher(ref.label, self._file_id(path), loader(path))
            for ref in stage.teachers
            for path in [self._teacher_file(ref)]
        ]

    def prepare_method(self, stage: Stage, student: torch.nn.Module, device: torch.device) -> Method:
        """The stage's method with its teachers and its once-per-stage work (caches) done."""
        task = self.task(stage.task)
        teachers = self.teachers(stage, device)
        method = stage.method(stage.options, task, student, teachers, stage.training.label_smoothing)
        method.prepare(StageContext(
            cache_dir=self.recipe.output_dir / "_cache" / stage.name,
            max_tokens=stage.training.max_tokens, device=device, rebuild=self.force,
            log=lambda text: _log(stage.name, text), write_text=_write_once,
            teacher_ids=[t.id for t in teachers],
        ))
        return method

    def _train(self, stage: Stage, folder: Path) -> None:
        task = self.task(stage.task)
        device = pick_device(stage.training.device)
        torch.manual_seed(stage.training.seed)
        student = task.build_model(stage.model)
        source = self.recipe.stage(stage.init).task if stage.init is not None else None
        if source is not None and self.recipe.tasks[source].cls is not self.recipe.tasks[stage.task].cls:
            source_task = self.task(source)  # a model of another task (task_init): the parts they share
            start, _ = load_trained_model(source_task, self.stage_dir(stage.init) / "model.pt")
            task.init_from_task(student, source_task, start, stage.init_layers)
        elif stage.init is not None:
            start, _ = load_trained_model(task, self.stage_dir(stage.init) / "model.pt")
            if stage.init_layers is None:
                student.load_state_dict(start.state_dict())
            else:
                task.init_from_layers(student, start, stage.init_layers)
        method = self.prepare_method(stage, student, device)
        trainer = Trainer(
            method=method, task=task, student=student, config=stage.training,
            stage_dir=folder, device=device, label=stage.name,
        )
        trainer.run()
        state = trainer.best_state_dict()
        distributed.on_main(lambda: save_model(
            folder / "model.pt", task=task.name, model_config=stage.model.model_dump(mode="json"),
            vocabulary=task.vocabulary_id(), output_space=task.output_space(), state_dict=state,
        ))

    # -- prediction, outputs and evaluation ---------------------------------------------------

    def predict(self, task: TaskAdapter, model: torch.nn.Module, inputs: list[Any], options: BaseModel) -> tuple[list[Any], float]:
        """Predictions for ``inputs`` in order, and the seconds it took (the slowest rank's).

        Rank r predicts chunks r, r + W, ... of ``PREDICT_CHUNK`` inputs; every rank returns all
        predictions, and each chunk is the one a single process would predict, so the results are too.
        """
        starts = list(range(0, len(inputs), PREDICT_CHUNK))
        began = time.perf_counter()
        mine = {s: task.predict(model, inputs[s : s + PREDICT_CHUNK], options) for s in starts[distributed.rank() :: distributed.world_size()]}
        seconds = time.perf_counter() - began
        gathered = distributed.all_gather((mine, seconds))
        chunks = {s: part for rank_chunks, _ in gathered for s, part in rank_chunks.items()}
        return [p for s in starts for p in chunks[s]], max(t for _, t in gathered)

    def score_model(self, task: TaskAdapter, model: torch.nn.Module, options: BaseModel) -> tuple[dict[str, Any], list[Any]]:
        """The metrics of ``model`` on the evaluation split of ``options``, and its predictions."""
        split = getattr(options, "split", "test")
        inputs = task.eval_inputs(split, options)[: getattr(options, "max_sentences", None)]
        predictions, seconds = self.predict(task, model, inputs, options)
        metrics = task.score(split, predictions, options)
        metrics["sentences_per_second"] = round(len(predictions) / max(seconds, 1e-9), 2)
        return metrics, predictions

    def _write_outputs(self, stage: Stage, task: TaskAdapter, model: torch.nn.Module, folder: Path) -> None:
        """The model's predictions on whole splits, one line per example, for tasks that read them."""
        out = folder / "outputs"
        key = _digest({"stage": self.stage_hash(stage), "settings": stage.evaluation.model_dump(), "splits": stage.outputs})
        manifest = out / "manifest.json"
        done = distributed.on_main(lambda: manifest.exists() and _read_or_none(manifest, "outputs manifest").get("key") == key)
        if done:
            return
        for split in stage.outputs:
            predictions, _ = self.predict(task, model, task.eval_inputs(split, stage.evaluation), stage.evaluation)
            _write_once(out / f"{split}.txt", "".join(task.as_text(p).replace("\n", " ") + "\n" for p in predictions))
            _log(stage.name, f"outputs: {len(predictions)} {split} predictions ({out / f'{split}.txt'})")
        distributed.on_main(lambda: atomic_write_json(manifest, {"key": key, "splits": stage.outputs}))

    def _evaluate(self, stage: Stage, task: TaskAdapter, model: torch.nn.Module, folder: Path) -> dict[str, Any]:
        options = stage.evaluation
        split = getattr(options, "split", "test")
        report_path = folder / "report.json"
        key = _digest({"task": task.fingerprint(), "evaluation": options.model_dump()})
        report = distributed.on_main(lambda: _read_or_none(report_path, "evaluation report"))
        if report.get("evaluation_hash") == key:
            return report["metrics"]
        metrics, predictions = self.score_model(task, model, options)
        _write_once(folder / f"predictions.{split}.txt", "".join(task.as_text(p) + "\n" for p in predictions))
        distributed.on_main(lambda: atomic_write_json(report_path, {"evaluation_hash": key, "metrics": metrics}))
        return metrics

    def _write_status(self, folder: Path, stage: Stage, status: str) -> None:
        atomic_write_json(folder / "stage.json", {
            "hash": self.stage_hash(stage), "stage": stage.name, "recipe": str(self.recipe.path), "status": status,
            "parts": self.stage_parts(stage),
        })

    def _stage_config(self, stage: Stage) -> dict[str, Any]:
        resolved = self.recipe.resolved()
        resolved["stages"] = [s for s in resolved["stages"] if s["name"] == stage.name]
        return resolved


def _differences(old: Any, new: dict[str, Any], at: str = "") -> str:
    """Which parts of a stage's configuration differ, with the folder's and this recipe's values."""
    if not isinstance(old, dict):
        return "the folder records no parts (written by an older seqkd)"
    found = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif a != b:
            found.append(f"{path}: {json.dumps(a)} in the folder, {json.dumps(b)} here")

    walk(old, new, at)
    return "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "") if found else "no recorded part differs"


def _read_or_none(path: Path, what: str) -> dict[str, Any]:
    """A JSON file the engine can redo: a missing or unreadable one counts as absent ({})."""
    try:
        data = read_json(path, what)
    except SeqkdError:
        return {}
    return data if isinstance(data, dict) else {}
