"""Runs a recipe's stages in order, each in ``<output>/<stage>/``.

A stage folder holds ``stage.json`` (hash and status), ``config.yaml`` (the resolved recipe),
``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``, ``model.pt`` and the evaluation report. A
stage whose hash (config + data + teacher) matches a finished folder is reused, so one teacher
serves many student recipes; a matching unfinished folder is resumed; a folder of another config
is only replaced with ``force``.

In a multi-process run (docs/distributed.md) every rank runs the same stages; rank 0 alone claims
folders and writes status, configs, model files and reports, through ``distributed.on_main``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from seqkd import distributed
from seqkd.checkpoint import CheckpointError, load_model_file, save_model
from seqkd.errors import SeqkdError
from seqkd.method import Method, StageContext
from seqkd.recipe import Recipe, Stage
from seqkd.tasks.base import TaskAdapter
from seqkd.trainer import Trainer, pick_device


class StageConflict(SeqkdError):
    pass


@dataclass
class StageReport:
    name: str
    method: str
    model: str
    parameters: int
    reused: bool
    metrics: dict[str, Any]


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_trained_model(task: TaskAdapter, path: Path, *, check_vocabulary: bool) -> torch.nn.Module:
    """Rebuild a model from a seqkd model file (weights only) for ``task``."""
    data = load_model_file(path)
    if data["task"] != task.name:
        raise CheckpointError(f"{path}: a {data['task']!r} model cannot serve the {task.name!r} task")
    if check_vocabulary and data["vocabulary"] != task.vocabulary_id():
        raise CheckpointError(
            f"{path}: the model's vocabulary ({data['vocabulary']}) differs from this recipe's "
            f"({task.vocabulary_id()}); teacher and student must share one vocabulary for this method"
        )
    model = task.build_model(task.model_schema.model_validate(data["model_config"]))
    model.load_state_dict(data["state_dict"])
    return model


def _log(stage: str, text: str) -> None:
    if distributed.is_main():  # one copy of each line, however many processes
        print(f"[{stage}] {text}", file=sys.stderr, flush=True)


class Engine:
    def __init__(self, recipe: Recipe, *, force: bool = False) -> None:
        self.recipe = recipe
        self.force = force
        self.task = recipe.task_cls(recipe.task, recipe.output_dir / "_shared", recipe.path.parent)
        self.hashes: dict[str, str] = {}

    def stage_dir(self, name: str) -> Path:
        return self.recipe.output_dir / name

    def stage_hash(self, stage: Stage) -> str:
        teacher = None
        if stage.teacher is not None:
            teacher = self.hashes[stage.teacher]
        elif stage.teacher_checkpoint is not None:
            teacher = hashlib.sha256(stage.teacher_checkpoint.read_bytes()).hexdigest()[:16]
        training = stage.training.model_dump(exclude={"log_every", "device"})
        return _digest({
            "task": self.task.fingerprint(), "method": stage.method.name,
            "model": stage.model.model_dump(), "training": training,
            "options": stage.options.model_dump(), "teacher": teacher,
            "init": self.hashes[stage.init] if stage.init else None,
        })

    def run(self, only: list[str] | None = None) -> list[StageReport]:
        distributed.main_first(self.task.prepare)
        reports = []
        for stage in self.recipe.stages:
            self.hashes[stage.name] = self.stage_hash(stage)
            if only and stage.name not in only:
                continue
            reports.append(self.run_stage(stage))
        return reports

    def build_caches(self, only: list[str] | None = None) -> list[Path]:
        """Build the teacher-output caches of the stages that use them, without training."""
        distributed.main_first(self.task.prepare)
        built = []
        for stage in self.recipe.stages:
            self.hashes[stage.name] = self.stage_hash(stage)
            if (only and stage.name not in only) or self._teacher_path(stage) is None:
                continue
            teacher = self._teacher_path(stage)
            if not teacher.exists():
                raise StageConflict(f"stage {stage.name!r}: its teacher {teacher} is not trained yet; run the recipe's earlier stages first")
            device = pick_device(stage.training.device)
            self.prepare_method(stage, self.task.build_model(stage.model), device)
            folder = self.recipe.output_dir / "_cache" / stage.name
            if folder.exists():
                built.append(folder)
        return built

    def _claim(self, stage: Stage, folder: Path) -> dict[str, Any] | None:
        """Return the stage's existing status if it may be reused or resumed; refuse a stranger's folder."""
        status_path = folder / "stage.json"
        if not status_path.exists():
            if folder.exists() and any(folder.iterdir()) and not self.force:
                raise StageConflict(f"{folder} exists and is not a seqkd stage folder; use --force to replace it")
            return None
        status = json.loads(status_path.read_text())
        if status["hash"] == self.hashes[stage.name]:
            return status
        if not self.force:
            raise StageConflict(
                f"{folder} holds stage {stage.name!r} of a different configuration "
                f"(written by {status.get('recipe')}); use --force to replace it, or set output.dir"
            )
        shutil.rmtree(folder)
        return None

    def _open_stage(self, stage: Stage, folder: Path) -> bool:
        """Claim the stage's folder; True if its finished model is reused, else it is marked running."""
        status = self._claim(stage, folder)
        folder.mkdir(parents=True, exist_ok=True)
        if status is not None and status["status"] == "done":
            return True
        self._write_status(folder, stage, "running")
        (folder / "config.yaml").write_text(yaml.safe_dump(self._stage_config(stage), sort_keys=False))
        return False

    def run_stage(self, stage: Stage) -> StageReport:
        folder = self.stage_dir(stage.name)
        reused = distributed.on_main(lambda: self._open_stage(stage, folder))
        if not reused:
            self._train(stage, folder)
            distributed.on_main(lambda: self._write_status(folder, stage, "done"))
        model = load_trained_model(self.task, folder / "model.pt", check_vocabulary=True)
        metrics = self._evaluate(stage, model, folder) if stage.evaluate else {}
        return StageReport(stage.name, stage.method.name, stage.model_role, count_parameters(model), reused, metrics)

    def _teacher_path(self, stage: Stage) -> Path | None:
        if stage.teacher is not None:
            return self.stage_dir(stage.teacher) / "model.pt"
        return stage.teacher_checkpoint

    def prepare_method(self, stage: Stage, student: torch.nn.Module, device: torch.device) -> Method:
        """The stage's method with its teacher loaded and its once-per-stage work (caches) done."""
        teacher, teacher_id = None, None
        path = self._teacher_path(stage)
        if path is not None:
            teacher = load_trained_model(self.task, path, check_vocabulary=stage.method.needs_same_vocabulary)
            teacher.to(device)
            teacher_id = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        method = stage.method(stage.options, self.task, student, teacher, stage.training.label_smoothing)
        method.prepare(StageContext(
            cache_dir=self.recipe.output_dir / "_cache" / stage.name,
            teacher_id=teacher_id, max_tokens=stage.training.max_tokens, device=device, rebuild=self.force,
            log=lambda text: _log(stage.name, text),
        ))
        return method

    def _train(self, stage: Stage, folder: Path) -> None:
        device = pick_device(stage.training.device)
        torch.manual_seed(stage.training.seed)
        student = self.task.build_model(stage.model)
        if stage.init is not None:
            start = self.stage_dir(stage.init) / "model.pt"
            if not start.exists():
                raise StageConflict(f"stage {stage.name!r}: its starting point {start} is not trained yet; run stage {stage.init!r} first")
            student.load_state_dict(load_trained_model(self.task, start, check_vocabulary=True).state_dict())
        method = self.prepare_method(stage, student, device)
        trainer = Trainer(
            method=method, task=self.task, student=student, config=stage.training,
            stage_dir=folder, device=device, label=stage.name,
        )
        trainer.run()
        distributed.on_main(lambda: save_model(
            folder / "model.pt", task=self.task.name, model_config=stage.model.model_dump(mode="json"),
            vocabulary=self.task.vocabulary_id(), state_dict=trainer.best_state_dict(),
        ))

    def _evaluate(self, stage: Stage, model: torch.nn.Module, folder: Path) -> dict[str, Any]:
        evaluation = self.recipe.evaluation
        report_path = folder / "report.json"
        key = _digest(evaluation.model_dump())
        report = distributed.on_main(lambda: json.loads(report_path.read_text()) if report_path.exists() else None)
        if report is not None and report.get("evaluation_hash") == key:
            return report["metrics"]
        model.to(pick_device(stage.training.device))
        metrics = self.task.evaluate(model, evaluation.split, folder, evaluation)
        distributed.on_main(lambda: report_path.write_text(
            json.dumps({"evaluation_hash": key, "metrics": metrics}, indent=2) + "\n"
        ))
        return metrics

    def _write_status(self, folder: Path, stage: Stage, status: str) -> None:
        (folder / "stage.json").write_text(json.dumps(
            {"hash": self.hashes[stage.name], "stage": stage.name, "recipe": str(self.recipe.path), "status": status},
            indent=2,
        ) + "\n")

    def _stage_config(self, stage: Stage) -> dict[str, Any]:
        resolved = self.recipe.resolved()
        resolved["stages"] = [s for s in resolved["stages"] if s["name"] == stage.name]
        return resolved
