"""Recipes: YAML files validated into typed objects, with errors a person can act on.

Validation runs in two passes. The core schema (``RecipeFile``) checks the recipe's shape; then
each plugin-owned section (``task:``, ``models:``, ``evaluation:``, each stage's ``options:``) is
validated by the schema the task or method plugin contributes. Every error names the file, the
line, the field path and, where there is a fixed set, the valid choices.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seqkd.errors import SeqkdError
from seqkd.method import Method
from seqkd.plugins import KNOWN_PLUGINS, Registry, allow_list, get_registry
from seqkd.tasks.base import TaskAdapter
from seqkd.training_config import TrainingConfig

Loc = tuple[str | int, ...]
_NAME = r"^[A-Za-z][A-Za-z0-9_-]*$"


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: str = Field("runs/{recipe}", description="Run folder, relative to the working directory; {recipe} is the recipe file's stem.")


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, description="Stage name; its folder is <output.dir>/<name>.")
    method: str = Field(description="Method plugin that trains this stage.")
    model: str = Field(description="Which entry of `models:` this stage trains.")
    teacher: str | None = Field(None, description="An earlier stage whose final model is the teacher.")
    teacher_checkpoint: str | None = Field(None, description="Or a seqkd model file from elsewhere (loaded weights-only).")
    init: str | None = Field(None, description="An earlier stage of the same model config whose final model is this stage's starting point.")
    training: dict[str, Any] = Field(default_factory=dict, description="Overrides of the recipe's `training:`.")
    options: dict[str, Any] = Field(default_factory=dict, description="The method's options (its own schema).")
    evaluate: bool = Field(True, description="Score the final model on the evaluation split.")


class RecipeFile(BaseModel):
    """The core shape of a recipe file; plugin sections stay untyped here."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(description="One line shown by `seqkd recipes`.")
    task: dict[str, Any] = Field(description="`name:` picks the task adapter; the rest is its schema.")
    models: dict[str, dict[str, Any]] = Field(description="Model configs by role (teacher, student, ...).")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: dict[str, Any] = Field(default_factory=dict, description="The task's evaluation settings.")
    output: OutputConfig = Field(default_factory=OutputConfig)
    stages: list[StageConfig] = Field(min_length=1, description="Run in order.")


@dataclass
class Stage:
    name: str
    method: type[Method]
    model_role: str
    model: BaseModel
    teacher: str | None
    teacher_checkpoint: Path | None
    init: str | None
    training: TrainingConfig
    options: BaseModel
    evaluate: bool


@dataclass
class Recipe:
    """A validated recipe with every plugin section typed and every default filled in."""

    path: Path
    description: str
    task_cls: type[TaskAdapter]
    task: BaseModel
    models: dict[str, BaseModel]
    training: TrainingConfig
    evaluation: BaseModel
    output_dir: Path
    stages: list[Stage]

    def resolved(self) -> dict[str, Any]:
        """The recipe as plain data with defaults filled in (what `seqkd show` prints)."""
        return {
            "description": self.description,
            "task": self.task.model_dump(mode="json"),
            "models": {role: m.model_dump(mode="json") for role, m in self.models.items()},
            "training": self.training.model_dump(mode="json"),
            "evaluation": self.evaluation.model_dump(mode="json"),
            "output": {"dir": str(self.output_dir)},
            "stages": [
                {
                    "name": s.name,
                    "method": s.method.name,
                    "model": s.model_role,
                    "teacher": s.teacher,
                    "teacher_checkpoint": str(s.teacher_checkpoint) if s.teacher_checkpoint else None,
                    "init": s.init,
                    "training": s.training.model_dump(mode="json"),
                    "options": s.options.model_dump(mode="json"),
                    "evaluate": s.evaluate,
                }
                for s in self.stages
            ],
        }


# -- errors -------------------------------------------------------------------------------------


@dataclass
class Problem:
    loc: Loc
    message: str


class RecipeError(SeqkdError, ValueError):
    """Every problem found in one recipe, each as ``file:line: field.path: message``."""

    def __init__(self, path: Path, problems: list[Problem], lines: dict[Loc, int], overridden: set[Loc]) -> None:
        self.path, self.problems = path, problems
        rendered = []
        for p in problems:
            where = f"{path} (command-line override)" if _covered(p.loc, overridden) else f"{path}:{_line_of(p.loc, lines)}"
            rendered.append(f"{where}: {_dotted(p.loc) or '(top level)'}: {p.message}")
        super().__init__("invalid recipe:\n  " + "\n  ".join(rendered))


def _covered(loc: Loc, overridden: set[Loc]) -> bool:
    return any(loc[: len(o)] == o for o in overridden)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def _yaml_lines(node: yaml.Node | None, loc: Loc = (), out: dict[Loc, int] | None = None) -> dict[Loc, int]:
    """Map each field path of a YAML document to its 1-based line."""
    out = {} if out is None else out
    if node is None:
        return out
    out.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[loc + (key.value,)] = key.start_mark.line + 1
            _yaml_lines(value, loc + (key.value,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _yaml_lines(item, loc + (i,), out)
    return out


def _choices(kind: str, name: object, valid: list[str]) -> str:
    hint = difflib.get_close_matches(str(name), valid, n=1)
    did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"unknown {kind} {name!r}{did_you_mean} (valid choices: {', '.join(sorted(valid)) or 'none'})"


def _unknown_plugin(kind: str, name: object, registry: Registry) -> str:
    """An unknown task or method: the choices, plus where it might come from (tasks and methods are
    plugins, so the likely cause is a package that is not installed, did not load or is not allowed)."""
    message = _choices(kind, name, list(getattr(registry, f"{kind}s")))
    known = KNOWN_PLUGINS.get(str(name))
    failed = [info for info in registry.plugins if info.error]
    if known is not None:
        broken = next((info for info in failed if info.distribution == known.distribution), None)
        if broken is not None:
            message += f"; {kind} {name!r} comes from {known.distribution}, which is installed but failed to load: {broken.error}"
        else:
            message += f"; {kind} {name!r} comes from the plugin package {known.distribution}, which is not installed: {known.install}"
    elif failed:
        message += f"; plugins that failed to load: {', '.join(i.name for i in failed)} (`seqkd plugins` shows why)"
    else:
        message += f"; {kind}s come from plugins: `seqkd plugins` lists the installed ones"
    allowed = allow_list()
    if allowed is not None:
        message += f" (SEQKD_PLUGINS is set and loads only: {', '.join(sorted(allowed)) or 'nothing'})"
    return message


def _schema_at(schema: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that owns ``loc`` (to list valid field names for unknown keys)."""
    current: Any = schema
    for part in loc:
        while typing.get_origin(current) in (typing.Union, types.UnionType):
            current = next(a for a in typing.get_args(current) if a is not type(None))
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            field = current.model_fields.get(part)
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _validate(schema: type[BaseModel], data: Any, prefix: Loc, problems: list[Problem]) -> Any:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "extra_forbidden":
                owner = _schema_at(schema, loc[:-1])
                valid = list(owner.model_fields) if owner else []
                problems.append(Problem(prefix + loc, _choices("field", loc[-1], valid)))
            else:
                message = re.sub(r"^Value error, ", "", err["msg"])
                problems.append(Problem(prefix + loc, message))
        return None


# -- overrides ----------------------------------------------------------------------------------


def apply_override(raw: dict[str, Any], override: str) -> Loc:
    """Apply ``a.b.c=value`` (value parsed as YAML) to the raw recipe; list items by index or name."""
    if "=" not in override:
        raise ValueError(f"override {override!r} is not of the form key.path=value")
    key, value = override.split("=", 1)
    parts = key.strip().split(".")
    node: Any = raw
    loc: list[str | int] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            index = int(part) if part.isdigit() else next(
                (j for j, item in enumerate(node) if isinstance(item, dict) and item.get("name") == part), None
            )
            if index is None or index >= len(node):
                names = [item.get("name") for item in node if isinstance(item, dict)]
                raise ValueError(f"override {override!r}: no list item {part!r} (items: {names})")
            loc.append(index)
            if last:
                node[index] = yaml.safe_load(value)
            else:
                node = node[index]
        elif isinstance(node, dict):
            loc.append(part)
            if last:
                node[part] = yaml.safe_load(value)
            else:
                node = node.setdefault(part, {})
        else:
            raise ValueError(f"override {override!r}: {'.'.join(parts[:i])} is not a mapping or list")
    return tuple(loc)


# -- loading ------------------------------------------------------------------------------------


def load_recipe(path: Path | str, overrides: list[str] = (), registry: Registry | None = None) -> Recipe:
    path = Path(path)
    registry = registry or get_registry()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(path, [Problem((), f"cannot read recipe: {exc.strerror}")], {}, set()) from exc
    try:
        raw = yaml.safe_load(text)
        lines = _yaml_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise RecipeError(path, [Problem((), f"not valid YAML: {exc}")], {(): line}, set()) from exc
    if not isinstance(raw, dict):
        raise RecipeError(path, [Problem((), "a recipe must be a YAML mapping")], lines, set())
    overridden: set[Loc] = set()
    try:
        for override in overrides:
            overridden.add(apply_override(raw, override))
    except ValueError as exc:
        raise RecipeError(path, [Problem((), str(exc))], lines, set()) from exc

    def fail(problems: list[Problem]) -> RecipeError:
        return RecipeError(path, problems, lines, overridden)

    problems: list[Problem] = []
    core = _validate(RecipeFile, raw, (), problems)
    if core is None:
        raise fail(problems)

    task_name = core.task.get("name")
    task_cls = registry.tasks.get(task_name) if isinstance(task_name, str) else None
    if task_cls is None:
        raise fail([Problem(("task", "name"), _unknown_plugin("task", task_name, registry))])
    task = _validate(task_cls.config_schema, core.task, ("task",), problems)
    models = {role: _validate(task_cls.model_schema, cfg, ("models", role), problems) for role, cfg in core.models.items()}
    evaluation = _validate(task_cls.evaluation_schema, core.evaluation, ("evaluation",), problems)

    stages: list[Stage] = []
    seen: list[str] = []
    roles: dict[str, str] = {}  # stage name -> model role
    for i, sc in enumerate(core.stages):
        at: Loc = ("stages", i)
        method_cls = registry.methods.get(sc.method)
        if sc.name in seen:
            problems.append(Problem(at + ("name",), f"stage name {sc.name!r} is used twice"))
        if method_cls is None:
            problems.append(Problem(at + ("method",), _unknown_plugin("method", sc.method, registry)))
        if sc.model not in core.models:
            problems.append(Problem(at + ("model",), _choices("model role", sc.model, list(core.models))))
        if sc.teacher is not None and sc.teacher not in seen:
            problems.append(Problem(at + ("teacher",), _choices("earlier stage", sc.teacher, seen)))
        if sc.teacher is not None and sc.teacher_checkpoint is not None:
            problems.append(Problem(at + ("teacher",), "give `teacher` or `teacher_checkpoint`, not both"))
        if sc.init is not None and sc.init not in seen:
            problems.append(Problem(at + ("init",), _choices("earlier stage", sc.init, seen)))
        elif sc.init is not None and sc.model in models and models[roles[sc.init]] != models[sc.model]:
            problems.append(Problem(at + ("init",), (
                f"stage {sc.init!r} trains model {roles[sc.init]!r}, whose config differs from {sc.model!r}: "
                "its weights cannot initialise this stage's model")))
        training = _validate(TrainingConfig, {**core.training.model_dump(), **sc.training}, at + ("training",), problems)
        options = None
        if method_cls is not None:
            options = _validate(method_cls.options_schema, sc.options, at + ("options",), problems)
            has_teacher = sc.teacher is not None or sc.teacher_checkpoint is not None
            if method_cls.needs_teacher and not has_teacher:
                problems.append(Problem(at + ("method",), f"method {sc.method!r} needs a teacher: set `teacher:` to an earlier stage"))
            if not method_cls.needs_teacher and has_teacher:
                problems.append(Problem(at + ("teacher",), f"method {sc.method!r} uses no teacher"))
            missing = method_cls.requires - task_cls.capabilities
            if missing:
                problems.append(Problem(at + ("method",), (
                    f"method {sc.method!r} needs capability {', '.join(sorted(missing))} that task {task_name!r} "
                    f"does not offer (it offers: {', '.join(sorted(task_cls.capabilities))})")))
            student, teacher = models.get(sc.model), models.get(roles.get(sc.teacher, ""))
            if not missing and student is not None and teacher is not None:
                why = method_cls.check_models(task_cls, student, teacher)
                if why:
                    problems.append(Problem(at + ("model",), f"method {sc.method!r} cannot distil {sc.teacher!r} into {sc.model!r}: {why}"))
        seen.append(sc.name)
        roles[sc.name] = sc.model
        if not problems:
            stages.append(Stage(
                name=sc.name, method=method_cls, model_role=sc.model, model=models[sc.model],
                teacher=sc.teacher, init=sc.init,
                teacher_checkpoint=(path.parent / sc.teacher_checkpoint) if sc.teacher_checkpoint else None,
                training=training, options=options, evaluate=sc.evaluate,
            ))
    if problems:
        raise fail(problems)
    return Recipe(
        path=path,
        description=core.description,
        task_cls=task_cls,
        task=task,
        models=models,
        training=core.training,
        evaluation=evaluation,
        output_dir=Path(core.output.dir.format(recipe=path.stem)),
        stages=stages,
    )
