"""``seqkd report RUN_DIR``: one HTML page about a run folder, readable offline.

The page (``RUN_DIR/report/index.html`` unless ``--output`` names another file) has the training
and validation curves of every stage, teacher vs students on quality, size and decoding speed, the
spread over seeds of a seed sweep, the metric signatures and the resolved recipe. Figures are PNG
files written beside the page and referenced by relative path (``<img src="loss.png">``), so the
folder can be copied or attached as a whole; the page loads nothing else (no script, no web font,
no stylesheet outside the file).

It only reads what runs wrote (``stage.json``, ``metrics.jsonl``, ``report.json``, ``config.yaml``,
``model.pt``'s tensor shapes, ``seeds.json``), so it works on a folder that is still being written
and on one copied from another machine: a stage without a report, an unfinished stage or a torn
line shows as such on the page instead of stopping it.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import seqkd
from seqkd.errors import SeqkdError

# report.json entries that describe the evaluation rather than measure quality
BOOKKEEPING = frozenset({
    "split", "sentences", "documents", "beam_size", "sentences_per_second", "substitutions", "deletions",
    "insertions", "truncated_documents",
})
# the metric a scatter plots when a report has several: the tasks' first headline metric
PREFERRED_HEADLINE = ("bleu", "accuracy", "f1", "wer", "rouge1", "rougeL")
LOWER_IS_BETTER = frozenset({"wer", "cer"})
SEED_SUFFIX = re.compile(r"^(?P<base>.+)-s(?P<seed>\d+)$")  # seqkd.seeds.expand's naming
STAGE_FILES = ("stage.json", "metrics.jsonl", "report.json", "config.yaml")
CURVES = (("train", "loss", "training loss"), ("train", "lr", "learning rate"), ("train", "tokens_per_s", "tokens / s"))
MISSING = "–"


@dataclass
class StageRun:
    """What one stage folder says about itself; ``problems`` are shown on the page, never raised."""

    name: str
    folder: Path
    group: str  # the recipe's stage name: a seed sweep's ``word_kd-s2`` belongs to ``word_kd``
    seed: int | None
    status: str | None = None  # stage.json's: running | done
    method: str | None = None
    task: str | None = None
    hash: str | None = None
    teachers: list[str] = field(default_factory=list)  # the teachers' stage hashes
    max_steps: int | None = None
    train: list[dict[str, Any]] = field(default_factory=list)
    valid: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    parameters: int | None = None
    config: str | None = None
    role: str = "standalone"  # teacher | student | standalone
    problems: list[str] = field(default_factory=list)

    @property
    def last_step(self) -> int | None:
        steps = [r["step"] for r in self.train + self.valid if isinstance(r.get("step"), (int, float))]
        return int(max(steps)) if steps else None

    @property
    def speed(self) -> float | None:
        value = (self.metrics or {}).get("sentences_per_second")
        return float(value) if _is_number(value) else None

    def state(self) -> str:
        """One phrase a reader can act on: finished, still going, or what is missing."""
        if self.status == "running":
            at = self.last_step
            of = f"/{self.max_steps}" if self.max_steps else ""
            return f"unfinished (step {at}{of})" if at is not None else "unfinished (nothing logged yet)"
        if self.status is None:
            return "no stage.json"
        if self.metrics is None:
            return f"{self.status}, no report.json yet"
        return self.status


@dataclass
class Spread:
    """A stage's metrics over seeds, as seeds.json holds them (or as computed from report.json)."""

    stage: str
    method: str | None
    per_seed: list[dict[str, Any]]  # {"seed": 1, "bleu": ...}
    mean: dict[str, float]
    std: dict[str, float]


@dataclass
class Run:
    folder: Path
    stages: list[StageRun]
    recipes: dict[str, str]  # recipe copies at the top of the run folder, by file name
    spreads: list[Spread]
    spread_source: str | None  # where ``spreads`` come from, for the page to say
    seeds_summary: dict[str, Any] | None


# ---------------------------------------------------------------------------------------------- reading


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(path: Path) -> tuple[Any, str | None]:
    """The value, or None and why: a report must show a damaged file, not stop at it."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path.name} unreadable ({type(exc).__name__}: {exc})"


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Train and valid records, each sorted by step with one record per step (the last written: a
    resumed run may log a step twice), and how many lines were not JSON objects (a torn last line
    while the stage is still writing)."""
    by_kind: dict[str, dict[float, dict[str, Any]]] = {"train": {}, "valid": {}}
    bad = 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return [], [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(record, dict) or not _is_number(record.get("step")):
            bad += 1
            continue
        kind = record.get("kind", "train")
        if kind in by_kind:
            by_kind[kind][record["step"]] = record
    train, valid = (sorted(by_kind[k].values(), key=lambda r: r["step"]) for k in ("train", "valid"))
    return train, valid, bad


def count_parameters(path: Path) -> int | None:
    """Trainable size from the model file's floating-point tensors, a tensor shared by two names
    (tied embeddings) counted once, as ``model.parameters()`` does. The file is memory-mapped, so
    only its index is read, not its weights."""
    if not path.exists():
        return None
    from seqkd.checkpoint import load_model_file

    state = load_model_file(path, mmap=True)["state_dict"]
    seen: dict[tuple[int, int, tuple[int, ...]], int] = {}
    for tensor in state.values():
        if tensor.is_floating_point():
            seen[(tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))] = tensor.numel()
    return sum(seen.values())


def _stage_folders(run_dir: Path) -> list[Path]:
    """Sub-folders a stage wrote; ``_cache``, ``_shared`` and the report's own folder are not stages."""
    return [p for p in sorted(run_dir.iterdir()) if p.is_dir() and not p.name.startswith("_")
            and any((p / name).exists() for name in STAGE_FILES)]


def _grouping(names: list[str], seed_stages: Iterable[str]) -> dict[str, tuple[str, int | None]]:
    """Each folder's recipe stage and seed: ``x-s2`` is seed 2 of ``x`` when seeds.json names ``x``
    or when another seed of ``x`` is there too (a lone ``lr-s5`` may be a stage of that name)."""
    known = set(seed_stages)
    matches = {n: SEED_SUFFIX.match(n) for n in names}
    bases = [m["base"] for m in matches.values() if m]
    out: dict[str, tuple[str, int | None]] = {}
    for name, m in matches.items():
        if m and (m["base"] in known or bases.count(m["base"]) > 1):
            out[name] = (m["base"], int(m["seed"]))
        else:
            out[name] = (name, None)
    return out


def read_stage(folder: Path, group: str, seed: int | None) -> StageRun:
    stage = StageRun(folder.name, folder, group, seed)
    status, problem = _read_json(folder / "stage.json")
    stage.problems += [problem] if problem else []
    if isinstance(status, dict):
        stage.status = status.get("status")
        stage.hash = status.get("hash")
        parts = status.get("parts") if isinstance(status.get("parts"), dict) else {}
        stage.method = parts.get("method")
        stage.teachers = [t for t in parts.get("teachers") or [] if isinstance(t, str)]
        stage.max_steps = (parts.get("training") or {}).get("max_steps")
    stage.train, stage.valid, bad = read_metrics(folder / "metrics.jsonl")
    if bad:
        stage.problems.append(f"metrics.jsonl: {bad} line(s) skipped (not a JSON record with a step)")
    report, problem = _read_json(folder / "report.json")
    stage.problems += [problem] if problem else []
    if isinstance(report, dict) and isinstance(report.get("metrics"), dict):
        stage.metrics = report["metrics"]
    elif report is not None:
        stage.problems.append("report.json holds no metrics")
    try:
        stage.config = (folder / "config.yaml").read_text(encoding="utf-8", errors="replace")
        stage.task = _task_of(stage.config)
    except FileNotFoundError:
        pass
    try:
        stage.parameters = count_parameters(folder / "model.pt")
    except Exception as exc:  # a damaged or foreign model file: the page says so and goes on
        stage.problems.append(f"model.pt: size unknown ({type(exc).__name__}: {exc})")
    return stage


def _task_of(config: str) -> str | None:
    """The stage's task from its config.yaml (which lists that one stage), to compare speeds within a task."""
    import yaml

    try:
        raw = yaml.safe_load(config)
        return str(raw["stages"][0]["task"])
    except (yaml.YAMLError, LookupError, TypeError):
        return None


def _recipe_order(recipes: dict[str, str]) -> list[str]:
    """Stage names in the order a recipe copy lists them (the order they ran in)."""
    import yaml

    order: list[str] = []
    for name in sorted(recipes, key=lambda n: not n.startswith("seeds-")):  # the expanded sweep first
        try:
            raw = yaml.safe_load(recipes[name])
        except yaml.YAMLError:
            continue
        listed = raw.get("stages") if isinstance(raw, dict) else None
        for stage in listed if isinstance(listed, list) else []:
            if isinstance(stage, dict) and isinstance(stage.get("name"), str) and stage["name"] not in order:
                order.append(stage["name"])
    return order


def _order(stages: list[StageRun], recipe_order: list[str]) -> list[StageRun]:
    """Recipe order where known, else teachers before the stages they teach, then by name; a sweep's
    seeds of one stage stay together (the recipe runs them a seed at a time)."""
    def at(s: StageRun) -> int:
        return next((recipe_order.index(n) for n in (s.name, s.group) if n in recipe_order), len(recipe_order))

    first: dict[str, int] = {}
    for s in stages:
        first[s.group] = min(first.get(s.group, at(s)), at(s))
    rank = {"teacher": 0, "standalone": 1, "student": 2}
    return sorted(stages, key=lambda s: (first[s.group], rank[s.role], s.group, s.seed or 0, s.name))


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping: a hand-edited seeds.json must not stop the page."""
    return value if isinstance(value, dict) else {}


def _spreads_from_summary(summary: dict[str, Any]) -> list[Spread]:
    out = []
    stages = summary.get("stages")
    for name, stage in (stages if isinstance(stages, dict) else {}).items():
        if isinstance(stage, dict):
            seeds = stage.get("seeds") if isinstance(stage.get("seeds"), list) else []
            out.append(Spread(name, stage.get("method"), [r for r in seeds if isinstance(r, dict)],
                              _dict(stage.get("mean")), _dict(stage.get("std"))))
    return out


def _spreads_from_reports(stages: list[StageRun]) -> list[Spread]:
    """Mean ± std over the seeds found, as seqkd.seeds.summarise computes them, for a sweep that was
    interrupted before it wrote seeds.json (or whose seeds.json was lost)."""
    groups: dict[str, list[StageRun]] = {}
    for s in stages:
        if s.metrics is not None:
            groups.setdefault(s.group, []).append(s)
    out = []
    for name, members in groups.items():
        keys = [k for k in quality_metrics(members[0].metrics) if all(_is_number(m.metrics.get(k)) for m in members)]
        rows = [{"seed": m.seed, **{k: m.metrics[k] for k in keys}} for m in members]
        mean = {k: round(statistics.mean(r[k] for r in rows), 4) for k in keys}
        std = {k: round(statistics.stdev(r[k] for r in rows), 4) if len(rows) > 1 else 0.0 for k in keys}
        out.append(Spread(name, members[0].method, rows, mean, std))
    return out


def read_run(run_dir: Path) -> Run:
    """Everything the page shows; a folder that is not a run folder is the one error raised."""
    if not run_dir.is_dir():
        raise SeqkdError(f"{run_dir}: no such folder (give a run folder: a recipe's output.dir, e.g. runs/quickstart)")
    folders = _stage_folders(run_dir)
    if not folders:
        raise SeqkdError(f"{run_dir}: holds no stage folders (none with {' or '.join(STAGE_FILES)}); "
                         "give a recipe's output.dir, e.g. runs/quickstart")
    summary, problem = _read_json(run_dir / "seeds.json")
    summary = summary if isinstance(summary, dict) else None
    swept = (summary or {}).get("stages")
    swept = swept if isinstance(swept, dict) else {}
    grouping = _grouping([f.name for f in folders], swept)
    stages = [read_stage(f, *grouping[f.name]) for f in folders]
    if problem:
        stages[0].problems.append(f"run folder: {problem}")
    parameters = {k: v.get("parameters") for k, v in swept.items() if isinstance(v, dict)}
    taught = {t for s in stages for t in s.teachers}
    for s in stages:
        s.role = "teacher" if s.hash in taught else "student" if s.teachers else "standalone"
        if s.parameters is None and _is_number(parameters.get(s.group)):
            s.parameters = int(parameters[s.group])
    recipes = {p.name: p.read_text(encoding="utf-8", errors="replace") for p in sorted(run_dir.glob("*.y*ml")) if p.is_file()}
    stages = _order(stages, _recipe_order(recipes))
    if summary is not None:
        spreads, source = _spreads_from_summary(summary), "seeds.json"
    elif any(s.seed is not None for s in stages):
        spreads, source = _spreads_from_reports(stages), "the stages' report.json files (no seeds.json: the sweep has not finished)"
    else:
        spreads, source = [], None
    return Run(run_dir, stages, recipes, spreads, source, summary)


def quality_metrics(metrics: dict[str, Any] | None) -> list[str]:
    """The report's numbers that measure quality, in the task's order (headline first)."""
    return [k for k, v in (metrics or {}).items() if _is_number(v) and k not in BOOKKEEPING]


def headline(metrics: dict[str, Any] | None) -> str | None:
    keys = quality_metrics(metrics)
    return next((k for k in PREFERRED_HEADLINE if k in keys), keys[0] if keys else None)


# ---------------------------------------------------------------------------------------------- figures


def _colours(groups: Sequence[str]) -> dict[str, Any]:
    """One colour per recipe stage, so a sweep's seeds share their stage's colour in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(groups) <= 10 else "tab20"]
    return {g: cmap(i % cmap.N) for i, g in enumerate(groups)}


def _new_figure(plot_width: float = 7.0, height: float = 4.2, ncols: int = 1, *, left: float = 0.8,
                right: float = 0.3, bottom: float = 0.6, top: float = 0.45, gap: float = 0.9):
    """A row of ``ncols`` plots ``plot_width`` inches wide, margins in inches: fixed margins instead
    of a layout engine, which took most of the time a page took to write."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = left + ncols * plot_width + (ncols - 1) * gap + right
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)  # Agg, without pyplot's process-wide state
    figure.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                           wspace=gap / plot_width)
    return figure, figure.subplots(1, ncols, squeeze=False)[0]


def _save(figure, path: Path) -> str:
    figure.savefig(path, dpi=100, format="png")
    return path.name


def _groups(stages: list[StageRun]) -> list[str]:
    return list(dict.fromkeys(s.group for s in stages))


def curve_figure(stages: list[StageRun], kind: str, key: str, title: str, path: Path) -> str | None:
    """One line per stage on shared axes; a sweep's seeds are thin lines of one colour and one legend
    entry. None when no stage logged ``key``."""
    logged = [(s, [(r["step"], r[key]) for r in getattr(s, kind) if _is_number(r.get(key))]) for s in stages]
    logged = [(s, points) for s, points in logged if points]
    if not logged:
        return None
    colours = _colours(_groups(stages))
    dashes = {g: ("-", "--", "-.", ":")[i % 4] for i, g in enumerate(colours)}  # equal curves (one lr schedule) stay visible
    sizes = {g: sum(1 for s, _ in logged if s.group == g) for g in colours}
    names = {g: f"{g} ({n} seeds)" if n > 1 else g for g, n in sizes.items() if n}
    figure, (axes,) = _new_figure(right=0.75 + 0.075 * max(map(len, names.values())))  # room for the legend
    labelled: set[str] = set()
    for s, points in logged:
        steps, values = zip(*points)
        many = sizes[s.group] > 1
        label = None if s.group in labelled else names[s.group] if many else s.name
        labelled.add(s.group)
        axes.plot(steps, values, color=colours[s.group], linestyle=dashes[s.group], linewidth=1.0 if many else 1.8, alpha=0.7 if many else 1.0,
                  marker="o" if len(points) < 12 else None, markersize=3, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel(title)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if key == "lr":
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(figure, path)


def quality_figure(stages: list[StageRun], metric: str, path: Path) -> str | None:
    """``metric`` against size and against decoding speed, one labelled point per recipe stage (a
    sweep's: the mean over seeds with ± std bars, its seeds as faint dots)."""
    scored = [s for s in stages if s.metrics is not None and _is_number(s.metrics.get(metric))]
    if not scored:
        return None
    colours = _colours(_groups(stages))
    figure, panels = _new_figure(4.6, 4.5, ncols=2, top=0.5)
    labels: dict[Any, list[tuple[float, float, str]]] = {}
    for axes, (attr, label) in zip(panels, (("parameters", "parameters (millions)"), ("speed", "decoding speed (sentences / s)"))):
        scale = 1e6 if attr == "parameters" else 1.0
        for group in _groups(scored):
            points = [(getattr(s, attr) / scale, float(s.metrics[metric])) for s in scored
                      if s.group == group and getattr(s, attr) is not None]
            if not points:
                continue
            xs, ys = zip(*points)
            x, y = statistics.mean(xs), statistics.mean(ys)
            if len(points) > 1:
                axes.scatter(xs, ys, color=colours[group], alpha=0.3, s=18, linewidths=0)
                axes.errorbar(x, y, xerr=statistics.stdev(xs), yerr=statistics.stdev(ys), color=colours[group], capsize=3)
            roles = {s.role for s in scored if s.group == group}
            axes.scatter([x], [y], color=colours[group], s=70 if "teacher" in roles else 45,
                         marker="*" if "teacher" in roles else "o", zorder=3, edgecolors="black", linewidths=0.5)
            labels.setdefault(axes, []).append((x, y, group))
        if not axes.has_data():
            axes.text(0.5, 0.5, f"no stage has a known {label.split(' (')[0]}", ha="center", va="center", transform=axes.transAxes)
        axes.set_xlabel(label)
        axes.set_ylabel(metric + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
        axes.grid(alpha=0.3)
        axes.margins(x=0.15, y=0.12)
    figure.suptitle(f"{metric}: quality vs size and speed (★ teacher)")
    figure.canvas.draw()  # settles the layout, so labels can be placed in pixels
    for axes, points in labels.items():
        _place_labels(axes, points)
    return _save(figure, path)


def _place_labels(axes, points: list[tuple[float, float, str]], height: float = 13.0) -> None:
    """Label each point beside it, moving a label up past the ones already placed that it would
    overlap (students of one size sit in a column), with a thin line back to its point when moved."""
    placed: list[tuple[float, float, float]] = []  # x0, x1, y of each label, in pixels
    for x, y, text in sorted(points, key=lambda p: axes.transData.transform(p[:2])[1]):
        px, py = axes.transData.transform((x, y))
        x0, x1 = px + 5, px + 5 + 6.5 * len(text)
        ly = py + 2
        for _ in placed:  # each move clears one placed label for good, so this many moves suffice
            hits = [c for a, b, c in placed if a < x1 and x0 < b and abs(ly - c) < height]
            if not hits:
                break
            ly = max(hits) + height
        placed.append((x0, x1, ly))
        moved = ly - py > height
        axes.annotate(text, (x, y), xytext=(5, ly - py), textcoords="offset pixels", fontsize="small", va="bottom",
                      arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 3} if moved else None)


def seeds_figure(spreads: list[Spread], path: Path) -> str | None:
    """Per metric, every seed's value as a dot and the mean with a ± std bar, one column per stage."""
    metrics = list(dict.fromkeys(k for sp in spreads for k in sp.mean if _is_number(sp.mean[k])))
    if not metrics:
        return None
    colours = _colours([sp.stage for sp in spreads])
    longest = max(len(sp.stage) for sp in spreads)
    figure, panels = _new_figure(max(2.5, 0.8 + 0.45 * len(spreads)), 3.4 + 0.05 * longest, ncols=len(metrics),
                                 bottom=0.35 + 0.05 * longest)  # stage names written at 40°
    for axes, metric in zip(panels, metrics):
        rows = [sp for sp in spreads if metric in sp.mean]
        for i, sp in enumerate(rows):
            values = [r[metric] for r in sp.per_seed if _is_number(r.get(metric))]
            offsets = [i + 0.12 * (j - (len(values) - 1) / 2) for j in range(len(values))]
            axes.scatter(offsets, values, color=colours[sp.stage], alpha=0.55, s=16, linewidths=0)
            axes.errorbar(i, sp.mean[metric], yerr=sp.std.get(metric, 0.0), fmt="_", markersize=14, capsize=4,
                          color=colours[sp.stage])
        axes.set_xticks(range(len(rows)), [sp.stage for sp in rows], rotation=40, ha="right", fontsize="small")
        axes.set_title(f"{metric}: seeds and mean ± std")
        axes.grid(alpha=0.3, axis="y")
    return _save(figure, path)


def write_figures(run: Run, folder: Path) -> dict[str, Any]:
    """The figures' file names by what they show (None where there is nothing to plot)."""
    figures: dict[str, Any] = {"curves": [], "valid": [], "quality": [], "seeds": None}
    for kind, key, title in CURVES:
        name = curve_figure(run.stages, kind, key, title, folder / f"{key}.png")
        figures["curves"].append((title, name))
    valid_keys = dict.fromkeys(k for s in run.stages for r in s.valid for k in r
                               if k not in ("kind", "step") and not k.startswith("best_") and _is_number(r[k]))
    for key in valid_keys:
        figures["valid"].append((f"validation {key}", curve_figure(run.stages, "valid", key, f"validation {key}",
                                                                    folder / f"valid_{_slug(key)}.png")))
    for metric in dict.fromkeys(headline(s.metrics) for s in run.stages if headline(s.metrics)):
        figures["quality"].append((metric, quality_figure(run.stages, metric, folder / f"quality_{_slug(metric)}.png")))
    if run.spreads:
        figures["seeds"] = seeds_figure(run.spreads, folder / "seeds.png")
    return figures


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# ---------------------------------------------------------------------------------------------- page

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1150px; padding: 0 1em; color: #222; }
h1 { margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; } tr.teacher td:first-child { font-weight: bold; }
.missing { color: #999; } .warn { color: #a40; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: .8em; overflow-x: auto; font-size: 13px; }
img { max-width: 100%; border: 1px solid #eee; margin: .4em 0; }
code { font-size: 13px; } .small { color: #666; font-size: 13px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any, digits: int = 2) -> str:
    return f"{value:,.{digits}f}" if _is_number(value) else MISSING


def _table(header: Sequence[str], rows: Iterable[Sequence[tuple[str, str]]], row_classes: Sequence[str] = ()) -> str:
    """Rows of ``(cell html, css class)``; cells are already escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    classes = list(row_classes)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f'<td class="{c}">{cell}</td>' if c else f"<td>{cell}</td>" for cell, c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(name: str | None, alt: str, absent: str) -> str:
    return f'<img src="{_e(name)}" alt="{_e(alt)}">' if name else f'<p class="missing">{_e(absent)}</p>'


def stages_table(run: Run) -> str:
    """One row per stage folder: role, state, size, every quality metric and speed, sizes and speeds
    relative to the first teacher of the stage's task (or its first stage with a speed), named in the
    header when there is one such stage."""
    columns = list(dict.fromkeys(k for s in run.stages for k in quality_metrics(s.metrics)))
    bases: dict[str | None, StageRun] = {}
    for s in sorted((s for s in run.stages if s.speed), key=lambda s: s.role != "teacher"):
        bases.setdefault(s.task, s)
    names = {b.name for b in bases.values()}
    header = ["stage", "role", "method", "state", "params", *columns, "sent/s",
              f"speed vs {names.pop()}" if len(names) == 1 else "speed vs the task's teacher", "steps logged"]
    rows = []
    for s in run.stages:
        m = s.metrics or {}
        base = bases.get(s.task)
        state = _e(s.state()) + "".join(f'<br><span class="warn">{_e(p)}</span>' for p in s.problems)
        rows.append([
            (_e(s.name), ""), (_e(s.role), ""), (_e(s.method or MISSING), ""), (state, "" if s.status == "done" and s.metrics else "warn"),
            (f"{s.parameters / 1e6:.2f}M" if s.parameters else MISSING, "num"),
            *((_number(m.get(k)), "num") for k in columns),
            (_number(s.speed, 1), "num"),
            (f"{s.speed / base.speed:.2f}×" if s.speed and base else MISSING, "num"),
            (str(s.last_step) if s.last_step is not None else MISSING, "num"),
        ])
    return _table(header, rows, [s.role for s in run.stages])


def _plus_minus(mean: Any, std: Any, sign: str = "") -> str:
    return f"{mean:{sign}.2f} ± {std if _is_number(std) else 0.0:.2f}" if _is_number(mean) else MISSING


def spread_section(run: Run, figure: str | None) -> str:
    if not run.spreads:
        return ""
    summary = run.seeds_summary or {}
    metrics = list(dict.fromkeys(k for sp in run.spreads for k in sp.mean))
    rows = [[(_e(sp.stage), ""), (_e(sp.method or MISSING), ""), (_e(", ".join(str(r["seed"]) for r in sp.per_seed if r.get("seed") is not None) or MISSING), ""),
             *((_plus_minus(sp.mean.get(k), sp.std.get(k, 0.0)), "num") for k in metrics)]
            for sp in run.spreads]
    parts = [f'<h2 id="seeds">Seeds: spread per stage</h2><p class="small">From {_e(run.spread_source)}'
             + (f"; seeds {_e(summary.get('seeds'))}, written {_e(summary.get('date'))}" if summary else "")
             + ". Mean ± sample standard deviation over seeds; a shared stage ran once (± 0).</p>",
             _table(["stage", "method", "seeds", *(f"{k} (mean ± std)" for k in metrics)], rows)]
    paired = {name: p for name, p in _dict(summary.get("paired")).items() if isinstance(p, dict)}
    if paired:
        keys = list(dict.fromkeys(k for p in paired.values() for k in _dict(p.get("mean"))))
        prow = [[(_e(name), ""), *((_plus_minus(_dict(p.get("mean")).get(k), _dict(p.get("std")).get(k, 0.0), "+"), "num") for k in keys)]
                for name, p in paired.items()]
        parts.append(f"<p>Paired differences from <b>{_e(summary.get('baseline'))}</b>, seed by seed:</p>"
                     + _table(["stage", *(f"Δ {k} (mean ± std)" for k in keys)], prow))
    parts.append(_img(figure, "per-seed values with mean ± std", "no numeric metric to plot"))
    return "\n".join(parts)


def signatures_section(run: Run) -> str:
    """Each metric's signature with the stages scored under it: scores are comparable only under one."""
    found: dict[tuple[str, str], list[str]] = {}
    for s in run.stages:
        for key, value in (s.metrics or {}).items():
            if key.endswith("_signature") and isinstance(value, str):
                found.setdefault((key.removesuffix("_signature"), value), []).append(s.name)
    if not found:
        return '<p class="missing">No report.json holds a metric signature.</p>'
    everyone = {s.name for s in run.stages if s.metrics is not None}
    rows = [[(_e(metric), ""), (f"<code>{_e(signature)}</code>", ""),
             ("every evaluated stage" if set(names) == everyone else _e(", ".join(names)), "")]
            for (metric, signature), names in found.items()]
    return _table(["metric", "signature", "stages"], rows)


def recipe_section(run: Run) -> str:
    parts = []
    for name, text in run.recipes.items():
        parts.append(f"<h3>{_e(name)} <span class='small'>(copy at the top of the run folder)</span></h3><pre>{_e(text)}</pre>")
    configs = [s for s in run.stages if s.config is not None]
    if configs:
        parts.append("<h3>Resolved recipe per stage <span class='small'>(config.yaml: every default filled in, "
                     "the stage's own entry under <code>stages</code>)</span></h3>")
        for i, s in enumerate(configs):
            parts.append(f"<details{' open' if i == 0 else ''}><summary>{_e(s.name)}/config.yaml</summary><pre>{_e(s.config)}</pre></details>")
    return "\n".join(parts) or '<p class="missing">No recipe copy and no config.yaml found.</p>'


def render(run: Run, figures: dict[str, Any]) -> str:
    """The whole page; every value from the run folder is escaped."""
    done = sum(1 for s in run.stages if s.status == "done")
    curves = "\n".join(_img(name, title, f"no stage logged {title}") for title, name in figures["curves"])
    valid = "\n".join(_img(name, title, f"no stage logged {title}") for title, name in figures["valid"]) \
        or '<p class="missing">No validation records logged.</p>'
    quality = "\n".join(_img(name, f"{metric} vs size and speed", f"no stage reports {metric}") for metric, name in figures["quality"]) \
        or '<p class="missing">No stage has a report.json with a quality metric yet.</p>'
    nav = ["<a href='#stages'>Stages</a>", *(["<a href='#seeds'>Seeds</a>"] if run.spreads else []),
           "<a href='#curves'>Curves</a>", "<a href='#signatures'>Signatures</a>", "<a href='#recipe'>Recipe</a>"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>seqkd report: {_e(run.folder.name)}</title>
<style>{STYLE}</style></head>
<body>
<h1>seqkd report: {_e(run.folder.name)}</h1>
<p class="small">Run folder <code>{_e(run.folder.resolve())}</code> · {len(run.stages)} stages, {done} done ·
written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by seqkd {_e(seqkd.__version__)}</p>
<nav>{' '.join(nav)}</nav>
<h2 id="stages">Teacher vs students: quality, size, speed</h2>
<p class="small">Quality metrics from each stage's report.json; parameters counted from model.pt;
speed is the decoding speed measured at evaluation (sentences / s, on the machine that evaluated).</p>
{stages_table(run)}
{quality}
{spread_section(run, figures['seeds'])}
<h2 id="curves">Training and validation curves</h2>
<p class="small">Training loss is each method's own objective (a KD loss is not on the scale of a cross-entropy);
validation records are on one scale for every stage of a task.</p>
{curves}
<h3>Validation</h3>
{valid}
<h2 id="signatures">Metric signatures</h2>
{signatures_section(run)}
<h2 id="recipe">Recipe</h2>
{recipe_section(run)}
</body></html>
"""


def write_report(run_dir: Path, output: Path | None = None) -> Path:
    """Write the page and its figures; returns the page's path."""
    run = read_run(Path(run_dir))
    page = Path(output) if output is not None else Path(run_dir) / "report" / "index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    figures = write_figures(run, page.parent)
    page.write_text(render(run, figures), encoding="utf-8")
    return page
