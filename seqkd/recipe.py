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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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

    @field_validator("dir")
    @classmethod
    def _only_recipe_placeholder(cls, value: str) -> str:
        if re.search(r"[{}]", value.replace("{recipe}", "")):
            raise ValueError(f"{value!r}: the only placeholder is {{recipe}} (the recipe file's stem); other braces are not allowed")
        return value


class TeacherEntry(BaseModel):
    """One entry of a stage's ``teachers:`` list written as a mapping."""

    model_config = ConfigDict(extra="forbid")

    stage: str | None = Field(None, description="An earlier stage whose final model is a teacher.")
    checkpoint: str | None = Field(None, description="Or a seqkd model file from elsewhere (loaded weights-only).")

    @model_validator(mode="after")
    def _one(self) -> "TeacherEntry":
        if (self.stage is None) == (self.checkpoint is None):
            raise ValueError("give `stage` or `checkpoint`")
        return self


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, description="Stage name; its folder is <output.dir>/<name>.")
    task: str | None = Field(None, description="Which entry of `tasks:` this stage trains (needed when there are several).")
    method: str = Field(description="Method plugin that trains this stage.")
    model: str = Field(description="Which entry of `models:` this stage trains.")
    teacher: str | None = Field(None, description="An earlier stage whose final model is the teacher (short for a one-entry `teachers:`).")
    teacher_checkpoint: str | None = Field(None, description="Or a seqkd model file from elsewhere (loaded weights-only).")
    teachers: list[str | TeacherEntry] = Field(
        default_factory=list, description="Several teachers: earlier stage names, or `{checkpoint: path}` entries."
    )
    init: str | None = Field(
        None,
        description="An earlier stage of the same model config whose final model is this stage's starting point "
        "(tasks with `task_init`: or a stage of another task, e.g. the masked LM whose encoder a classifier starts from).",
    )
    init_layers: list[int] | None = Field(
        None, min_length=1,
        description="With `init`: keep only these layers (0-based, one per layer of this stage's model, e.g. [0, 2, 4]) "
        "of a deeper starting model of the same kind and width, with its embeddings and head (tasks with `layer_init`).",
    )
    training: dict[str, Any] = Field(default_factory=dict, description="Overrides of the recipe's `training:`.")
    options: dict[str, Any] = Field(default_factory=dict, description="The method's options (its own schema).")
    evaluate: bool = Field(True, description="Score the final model on the evaluation split.")
    evaluation: dict[str, Any] = Field(default_factory=dict, description="Overrides of the task's `evaluation:` for this stage.")
    outputs: list[str] = Field(
        default_factory=list,
        description="Splits whose predictions this stage writes to <stage>/outputs/<split>.txt, one line per example (another task can `reads:` them).",
    )


class RecipeFile(BaseModel):
    """The core shape of a recipe file; plugin sections stay untyped here."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(description="One line shown by `seqkd recipes`.")
    task: dict[str, Any] | None = Field(None, description="`name:` picks the task adapter; the rest is its schema (one task).")
    tasks: dict[str, dict[str, Any]] | None = Field(
        None,
        description="Several tasks by key, each like `task:` plus its own `evaluation:` and `reads: {view: stage}` "
        "(input views made of another task's stage outputs).",
    )
    models: dict[str, dict[str, Any]] = Field(description="Model configs by role (teacher, student, ...).")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: dict[str, Any] = Field(default_factory=dict, description="The task's evaluation settings (with `task:`).")
    output: OutputConfig = Field(default_factory=OutputConfig)
    stages: list[StageConfig] = Field(min_length=1, description="Run in order.")

    @model_validator(mode="after")
    def _one_form(self) -> "RecipeFile":
        if (self.task is None) == (self.tasks is None):
            raise ValueError("give `task:` (one task) or `tasks:` (several), not both or neither")
        if self.tasks is not None and not self.tasks:
            raise ValueError("`tasks:` names no task")
        if self.tasks is not None and self.evaluation:
            raise ValueError("with `tasks:`, give each task its own `evaluation:`")
        return self


@dataclass
class TaskSpec:
    """One task of a recipe: its adapter, validated sections, and the views it reads from stages."""

    key: str
    cls: type[TaskAdapter]
    config: BaseModel
    evaluation: BaseModel
    reads: dict[str, str]  # input view -> the stage whose outputs it is


@dataclass(frozen=True)
class TeacherRef:
    stage: str | None
    checkpoint: Path | None

    @property
    def label(self) -> str:
        return self.stage if self.stage is not None else str(self.checkpoint)


@dataclass
class Stage:
    name: str
    task: str  # the key of its TaskSpec
    method: type[Method]
    model_role: str
    model: BaseModel
    teachers: list[TeacherRef]
    init: str | None
    init_layers: list[int] | None
    training: TrainingConfig
    options: BaseModel
    evaluate: bool
    evaluation: BaseModel
    outputs: list[str]
    # the distributions (name and version) that provide the task and the method: part of the stage's
    # hash, so a plugin upgraded to a new version retrains rather than reuses
    task_origin: str = ""
    method_origin: str = ""


@dataclass
class Recipe:
    """A validated recipe with every plugin section typed and every default filled in."""

    path: Path
    description: str
    tasks: dict[str, TaskSpec]
    models: dict[str, BaseModel]
    training: TrainingConfig
    output_dir: Path
    stages: list[Stage]
    single_task_form: bool  # written with `task:` (resolved() keeps the form)
    warnings: list[str] = field(default_factory=list)  # `file:line: field: what` for things that run but look unintended

    def only_task(self) -> TaskSpec:
        """The recipe's task, for commands and tools that serve one-task recipes."""
        if len(self.tasks) != 1:
            raise SeqkdError(f"{self.path}: the recipe has several tasks ({', '.join(self.tasks)}); name a stage instead")
        return next(iter(self.tasks.values()))

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise SeqkdError(f"{self.path}: no stage {name!r} (stages: {', '.join(s.name for s in self.stages)})")

    def resolved(self) -> dict[str, Any]:
        """The recipe as plain data with defaults filled in (what `seqkd show` prints)."""
        tasks = {
            key: {**spec.config.model_dump(mode="json"), "evaluation": spec.evaluation.model_dump(mode="json"),
                  **({"reads": spec.reads} if spec.reads else {})}
            for key, spec in self.tasks.items()
        }
        head: dict[str, Any] = {"description": self.description}
        if self.single_task_form:
            only = next(iter(tasks.values()))
            head["evaluation"] = only.pop("evaluation")
            head["task"] = only
        else:
            head["tasks"] = tasks
        return {
            **head,
            "models": {role: m.model_dump(mode="json") for role, m in self.models.items()},
            "training": self.training.model_dump(mode="json"),
            "output": {"dir": str(self.output_dir)},
            "stages": [
                {
                    "name": s.name,
                    "task": s.task,
                    "method": s.method.name,
                    "model": s.model_role,
                    "teachers": [t.stage if t.stage is not None else {"checkpoint": str(t.checkpoint)} for t in s.teachers],
                    "init": s.init,
                    "init_layers": s.init_layers,
                    "training": s.training.model_dump(mode="json"),
                    "options": s.options.model_dump(mode="json"),
                    "evaluate": s.evaluate,
                    "evaluation": s.evaluation.model_dump(mode="json"),
                    "outputs": s.outputs,
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
        message += f" (SEQKD_PLUGINS is set and loads only: {', '.join(sorted(allowed)) or 'nothing'}"
        if registry.unmatched:
            message += f"; of these, no installed plugin is called {', '.join(registry.unmatched)}"
        message += ")"
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


def _override_value(override: str, value: str) -> Any:
    try:
        return yaml.load(value, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"override {override!r}: the value is not valid YAML ({problem}); quote it to pass a string") from None


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {seen[key]}); only one value can count",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


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
                node[index] = _override_value(override, value)
            else:
                node = node[index]
        elif isinstance(node, dict):
            loc.append(part)
            if last:
                node[part] = _override_value(override, value)
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
        data = path.read_bytes()
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not a UTF-8 text file (byte 0x{data[exc.start]:02x} at offset {exc.start}); a recipe is YAML text"
        raise RecipeError(path, [Problem((), message)], {}, set()) from None
    except OSError as exc:
        raise RecipeError(path, [Problem((), f"cannot read recipe: {exc.strerror}")], {}, set()) from exc
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)
        lines = _yaml_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise RecipeError(path, [Problem((), f"not valid YAML: {getattr(exc, 'problem', None) or str(exc).splitlines()[0]}")], {(): line}, set()) from exc
    if not isinstance(raw, dict):
        raise RecipeError(path, [Problem((), "a recipe must be a YAML mapping")], lines, set())
    overridden: set[Loc] = set()
    try:
        for override in overrides:
            overridden.add(apply_override(raw, override))
    except ValueError as exc:
        raise RecipeError(path, [Problem((), str(exc))], lines, {()}) from None

    def fail(problems: list[Problem]) -> RecipeError:
        return RecipeError(path, problems, lines, overridden)

    problems: list[Problem] = []
    core = _validate(RecipeFile, raw, (), problems)
    if core is None:
        raise fail(problems)

    # -- tasks
    single = core.task is not None
    raw_tasks = {core.task.get("name") if isinstance(core.task.get("name"), str) else "task": dict(core.task)} if single else {
        key: dict(value) for key, value in core.tasks.items()
    }
    specs: dict[str, TaskSpec] = {}
    for key, raw_task in raw_tasks.items():
        at: Loc = ("task",) if single else ("tasks", key)
        evaluation_raw = core.evaluation if single else raw_task.pop("evaluation", {})
        reads = raw_task.pop("reads", {}) if not single else {}
        task_name = raw_task.get("name")
        task_cls = _lookup(registry, "task", task_name, at + ("name",), problems)
        if task_cls is None:
            continue
        if not isinstance(reads, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in reads.items()):
            problems.append(Problem(at + ("reads",), "`reads:` maps input view names to stage names, e.g. {asr: transcribe}"))
            reads = {}
        config = _validate(task_cls.config_schema, raw_task, at, problems)
        evaluation = _validate(task_cls.evaluation_schema, evaluation_raw, ("evaluation",) if single else at + ("evaluation",), problems)
        if config is not None and evaluation is not None:
            specs[key] = TaskSpec(key, task_cls, config, evaluation, reads)
    # -- vocabularies read from other tasks (e.g. a classifier reading a masked LM's sentencepiece model)
    for key, spec in specs.items():
        at = ("task",) if single else ("tasks", key)
        for field_name, source in spec.cls.vocabulary_sources(spec.config).items():
            if source not in specs or source == key:
                problems.append(Problem(at + (field_name,), _choices("task", source, [k for k in specs if k != key])))
            elif "shared_vocabulary" not in specs[source].cls.capabilities:
                problems.append(Problem(at + (field_name,), f"task {source!r} ({specs[source].cls.name}) has no vocabulary another task can read (no shared_vocabulary capability)"))
    if problems:
        raise fail(problems)

    # -- models: each validated by the task of the stages that train it
    model_task: dict[str, str] = {}
    for i, sc in enumerate(core.stages):
        key = sc.task if sc.task is not None else (next(iter(specs)) if len(specs) == 1 else None)
        if key is not None and key in specs and sc.model in core.models:
            earlier = model_task.setdefault(sc.model, key)
            if specs[earlier].cls is not specs[key].cls:
                problems.append(Problem(("stages", i, "model"), (
                    f"model {sc.model!r} is trained for task {earlier!r} ({specs[earlier].cls.name}) and {key!r} "
                    f"({specs[key].cls.name}); give each task its own model entry")))
    models: dict[str, BaseModel] = {}
    for role, cfg in core.models.items():
        key = model_task.get(role, next(iter(specs)) if len(specs) == 1 else None)
        if key is None:
            problems.append(Problem(("models", role), f"model {role!r} is trained by no stage, so no task says what it is; remove it"))
            continue
        validated = _validate(specs[key].cls.model_schema, cfg, ("models", role), problems)
        if validated is not None:
            models[role] = validated

    # -- stages
    stages: list[Stage] = []
    seen: list[str] = []
    stage_task: dict[str, str] = {}  # stage name -> task key
    roles: dict[str, str] = {}  # stage name -> model role
    for i, sc in enumerate(core.stages):
        at = ("stages", i)
        if sc.name in seen:
            problems.append(Problem(at + ("name",), f"stage name {sc.name!r} is used twice"))
        if sc.task is None and len(specs) > 1:
            problems.append(Problem(at, f"the recipe has several tasks: set `task:` (valid choices: {', '.join(sorted(specs))})"))
            continue
        key = sc.task if sc.task is not None else next(iter(specs))
        if key not in specs:
            problems.append(Problem(at + ("task",), _choices("task", key, list(specs))))
            continue
        spec = specs[key]
        method_cls = _lookup(registry, "method", sc.method, at + ("method",), problems)
        if sc.model not in core.models:
            problems.append(Problem(at + ("model",), _choices("model role", sc.model, list(core.models))))
        teachers = _teachers(sc, at, seen, path, problems)
        for ref in teachers:
            if ref.stage is not None and ref.stage in stage_task and specs[stage_task[ref.stage]].cls is not spec.cls:
                problems.append(Problem(at + ("teachers",), (
                    f"teacher {ref.stage!r} is a {specs[stage_task[ref.stage]].cls.name} model; "
                    f"this stage trains a {spec.cls.name} model")))
        if sc.init_layers is not None and sc.init is None:
            problems.append(Problem(at + ("init_layers",), "`init_layers:` picks layers of the `init:` stage's model; name that stage in `init:`"))
        source_spec = specs[stage_task[sc.init]] if sc.init in stage_task else None
        if sc.init is not None and sc.init not in seen:
            problems.append(Problem(at + ("init",), _choices("earlier stage", sc.init, seen)))
        elif source_spec is not None and source_spec.cls is not spec.cls:  # a model of another task
            if "task_init" not in spec.cls.capabilities:
                problems.append(Problem(at + ("init",), (
                    f"stage {sc.init!r} trains a {source_spec.cls.name} model; task {spec.cls.name!r} cannot start from "
                    "another task's model (no task_init capability)")))
            elif sc.model in models and roles[sc.init] in models:
                why = spec.cls.task_init_problem(spec.config, models[sc.model], source_spec.key, source_spec.cls, models[roles[sc.init]], sc.init_layers)
                if why:
                    problems.append(Problem(at + ("init",), f"stage {sc.init!r} cannot initialise this stage's model: {why}"))
        elif sc.init_layers is not None and "layer_init" not in spec.cls.capabilities:
            problems.append(Problem(at + ("init_layers",), f"task {spec.cls.name!r} cannot start a model from chosen layers (no layer_init capability)"))
        elif sc.init_layers is not None and sc.model in models and roles.get(sc.init) in models:
            why = spec.cls.layer_init_problem(models[sc.model], models[roles[sc.init]], sc.init_layers)
            if why:
                problems.append(Problem(at + ("init_layers",), why))
        elif sc.init is not None and sc.init_layers is None and sc.model in models and roles[sc.init] in models and models[roles[sc.init]] != models[sc.model]:
            problems.append(Problem(at + ("init",), (
                f"stage {sc.init!r} trains model {roles[sc.init]!r}, whose config differs from {sc.model!r}: "
                "its weights cannot initialise this stage's model")))
        for split in sc.outputs:
            if not isinstance(split, str) or not split:
                problems.append(Problem(at + ("outputs",), "`outputs:` lists split names, e.g. [train, valid, test]"))
        training = _validate(TrainingConfig, {**core.training.model_dump(), **sc.training}, at + ("training",), problems)
        evaluation = _validate(spec.cls.evaluation_schema, {**spec.evaluation.model_dump(), **sc.evaluation}, at + ("evaluation",), problems)
        options = None
        if method_cls is not None:
            options = _validate(method_cls.options_model(spec.cls), sc.options, at + ("options",), problems)
            teacher_problem = _teacher_count(sc.method, method_cls.num_teachers, len(teachers))
            if teacher_problem:
                problems.append(Problem(at + ("teachers" if teachers else "method",), teacher_problem))
            missing = method_cls.requires - spec.cls.capabilities
            if missing:
                problems.append(Problem(at + ("method",), (
                    f"method {sc.method!r} needs capability {', '.join(sorted(missing))} that task {spec.cls.name!r} "
                    f"does not offer (it offers: {', '.join(sorted(spec.cls.capabilities))})")))
            student = models.get(sc.model)
            # configs known before training: teachers from stages (a model file's is read at run time)
            teacher_models = [models.get(roles.get(t.stage, "")) if t.stage is not None else None for t in teachers]
            if not missing and student is not None and teacher_models and None not in teacher_models:
                why = method_cls.check_models(spec.cls, student, teacher_models)
                if why:
                    names = ", ".join(repr(t.label) for t in teachers)
                    problems.append(Problem(at + ("model",), f"method {sc.method!r} cannot distil {names} into {sc.model!r}: {why}"))
        seen.append(sc.name)
        roles[sc.name] = sc.model
        stage_task[sc.name] = key
        if not problems:
            stages.append(Stage(
                name=sc.name, task=key, method=method_cls, model_role=sc.model, model=models[sc.model],
                teachers=teachers, init=sc.init, init_layers=sc.init_layers, training=training, options=options, evaluate=sc.evaluate,
                evaluation=evaluation, outputs=list(sc.outputs),
                task_origin=_origin(registry, "tasks", spec.cls.name), method_origin=_origin(registry, "methods", sc.method),
            ))

    # -- views read from other tasks' stage outputs
    first_stage = {}
    for index, (name, key) in enumerate(stage_task.items()):
        first_stage.setdefault(key, index)
    order = list(stage_task)
    outputs = {sc.name: sc.outputs for sc in core.stages}
    for key, spec in specs.items():
        for view, source in spec.reads.items():
            at = ("tasks", key, "reads", view)
            if source not in stage_task:
                problems.append(Problem(at, _choices("stage", source, order)))
            elif stage_task[source] == key:
                problems.append(Problem(at, f"stage {source!r} trains this task itself; a task reads views made by another task's stage"))
            elif key in first_stage and order.index(source) > first_stage[key]:
                problems.append(Problem(at, f"stage {source!r} runs after this task's first stage {order[first_stage[key]]!r}; move it earlier"))
            elif not outputs[source]:
                problems.append(Problem(at, f"stage {source!r} writes no outputs: give it `outputs: [train, valid, test]`"))
    if problems:
        raise fail(problems)
    return Recipe(
        path=path,
        description=core.description,
        tasks=specs,
        models=models,
        training=core.training,
        output_dir=Path(core.output.dir.replace("{recipe}", path.stem)),
        stages=stages,
        single_task_form=single,
        warnings=[f"{path}:{_line_of(('models', role), lines)}: models.{role}: no stage trains this model"
                  for role in core.models if role not in roles.values()],
    )


def _origin(registry: Registry, kind: str, name: str) -> str:
    """'distribution version' of the plugin that registers ``name``."""
    for info in registry.plugins:
        if name in getattr(info, kind):
            return f"{info.distribution} {info.version}"
    return "registered in-process"


def _lookup(registry: Registry, kind: str, name: object, loc: Loc, problems: list[Problem]) -> Any:
    """The task or method class of that name, or a problem saying why there is none."""
    try:
        found = registry.lookup(kind, name) if isinstance(name, str) else None
    except SeqkdError as exc:  # a name two installed plugins register
        problems.append(Problem(loc, str(exc)))
        return None
    if found is None:
        problems.append(Problem(loc, _unknown_plugin(kind, name, registry)))
    return found


def _teacher_count(method: str, accepted: tuple[int, int | None], given: int) -> str | None:
    low, high = accepted
    if given < low:
        need = "a teacher" if low == 1 else f"at least {low} teachers"
        return f"method {method!r} needs {need}: set `teacher:` to an earlier stage" + ("" if low == 1 else " or list them in `teachers:`")
    if high == 0 and given:
        return f"method {method!r} uses no teacher"
    if high is not None and given > high:
        return f"method {method!r} takes at most {high} teacher{'s' if high > 1 else ''}; the stage names {given}"
    return None


def _teachers(sc: StageConfig, at: Loc, seen: list[str], path: Path, problems: list[Problem]) -> list[TeacherRef]:
    """The stage's teachers from `teacher:`, `teacher_checkpoint:` or `teachers:` (one form only)."""
    forms = [f for f in ("teacher", "teacher_checkpoint", "teachers") if getattr(sc, f)]
    if len(forms) > 1:
        problems.append(Problem(at + (forms[1],), f"give one of `teacher`, `teacher_checkpoint` and `teachers`, not {' and '.join(forms)}"))
        return []
    entries: list[tuple[Loc, str | None, str | None]] = []
    if sc.teacher is not None:
        entries.append((at + ("teacher",), sc.teacher, None))
    if sc.teacher_checkpoint is not None:
        entries.append((at + ("teacher_checkpoint",), None, sc.teacher_checkpoint))
    for j, item in enumerate(sc.teachers):
        stage, checkpoint = (item, None) if isinstance(item, str) else (item.stage, item.checkpoint)
        entries.append((at + ("teachers", j), stage, checkpoint))
    refs = []
    for loc, stage, checkpoint in entries:
        if stage is not None:
            if stage not in seen:
                problems.append(Problem(loc, _choices("earlier stage", stage, seen)))
                continue
            refs.append(TeacherRef(stage, None))
        else:
            file = path.parent / checkpoint
            if not file.is_file():
                problems.append(Problem(loc, f"{file}: no such model file"))
                continue
            refs.append(TeacherRef(None, file))
    if len(set(refs)) != len(refs):
        problems.append(Problem(at + ("teachers",), "a teacher is named twice"))
    return refs
