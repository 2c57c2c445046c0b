"""The ``seqkd`` command line. It parses arguments and prints; the work happens elsewhere."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

import seqkd
from seqkd.errors import SeqkdError
from seqkd.export import add_export_command
from seqkd.plugins import CORE_COMMANDS, get_registry


def _recipes_root() -> Path:
    return Path(seqkd.__file__).resolve().parent.parent / "recipes"


def cmd_plugins(args: argparse.Namespace) -> int:
    from collections.abc import Callable

    registry = get_registry()

    def shown(read: Callable[[], object]) -> str:
        """One plugin's class attributes for the listing; a class the host let through may still
        misbehave when read, and the listing must survive it."""
        try:
            return str(read())
        except Exception as exc:
            return f"? ({type(exc).__name__}: {exc})"

    for info in registry.plugins:
        print(f"{info.name}  ({info.distribution} {info.version})")
        if args.verbose:
            print(f"  module:  {info.module}")
            print(f"  file:    {info.path or '?'}")
            print(f"  hooks:   {', '.join(info.hooks) or '-'}")
            print(f"  api:     {info.api or '(not declared)'}")
        if info.error:
            print(f"  FAILED:  {info.error}")
            continue
        for name in info.tasks:
            if ("task", name) in registry.clashes:
                print(f"  task:    {name}  CLASH: unusable, see below")
                continue
            cls = registry.tasks.get(name)
            print(f"  task:    {name}  capabilities: {shown(lambda: ', '.join(sorted(cls.capabilities)))}")
        for name in info.methods:
            if ("method", name) in registry.clashes:
                print(f"  method:  {name}  CLASH: unusable, see below")
                continue
            cls = registry.methods.get(name)
            needs = shown(lambda: ", ".join(sorted(cls.requires)) or "-")
            print(f"  method:  {name}  needs: {needs}  - {shown(lambda: cls.description)}")
        for name in info.commands:
            print(f"  command: {name}  - {shown(lambda: registry.commands[name].help)}")
    for (kind, name), owners in sorted(registry.clashes.items()):
        print(f"CLASH: {kind} {name!r} registered by {' and '.join(owners)}; unusable until SEQKD_PLUGINS selects one")
    if registry.unmatched:
        print(
            f"warning: SEQKD_PLUGINS names plugins that are not installed: {', '.join(registry.unmatched)} "
            f"(installed: {', '.join(registry.installed) or 'none'})"
        )
    problems = any(i.error for i in registry.plugins) or registry.clashes or registry.unmatched
    return 1 if problems and args.strict else 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from seqkd.scaffold import write_plugin

    folder = write_plugin(args.name, args.dir)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        print(f"wrote {path}")
    python = sys.executable  # this environment's own interpreter: its pip installs where this seqkd runs
    print(f"\nnext, into this environment:  {python} -m pip install -e {folder} && {python} -m seqkd plugins")
    site = folder.parent / f"{folder.name}-site"
    print(f"or leaving it untouched:      {python} -m pip install --upgrade --no-deps --target {site} {folder}"
          f" && PYTHONPATH={site} {python} -m seqkd plugins")
    print("(reinstall with --upgrade after each change: without it pip keeps the installed copy)")
    return 0


def print_warnings(recipe) -> None:
    for warning in recipe.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from seqkd.recipe import load_recipe

    for path in args.files:
        recipe = load_recipe(path, args.overrides)
        print_warnings(recipe)
        print(f"{path}: ok")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from seqkd.recipe import load_recipe

    recipe = load_recipe(args.file, args.overrides)
    print(yaml.safe_dump(recipe.resolved(), sort_keys=False), end="")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    root = _recipes_root()
    for path in sorted(root.rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        print(f"{path.relative_to(root)}  - {raw.get('description', '')}")
    return 0


def format_table(reports, headline: dict[str, str]) -> str:
    """One row per stage: size, the task's headline metrics, and prediction speed relative to the
    first stage with one (named in the header, as it need not be a teacher)."""
    first = next((r for r in reports if r.metrics.get("sentences_per_second")), None)
    base = first.metrics["sentences_per_second"] if first else None
    rows = [("stage", "method", "params", *headline.values(), "sent/s", f"vs {first.name}" if first else "speed")]
    for r in reports:
        m = r.metrics
        sps = m.get("sentences_per_second")
        rows.append((
            r.name, r.method, f"{r.parameters / 1e6:.2f}M",
            *(f"{m[key]:.2f}" if key in m else "-" for key in headline),
            f"{sps:.1f}" if sps else "-",
            f"{sps / base:.2f}x" if sps and base else "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_reports(recipe, reports) -> str:
    """A table per task (each task has its own headline metrics), with the task's notes under it."""
    parts = []
    for key, spec in recipe.tasks.items():
        mine = [r for r in reports if r.task == key]
        if not mine:
            continue
        title = f"task {key} ({spec.cls.name})\n" if len(recipe.tasks) > 1 else ""
        notes = next((spec.cls.report_notes(r.metrics) for r in mine if r.metrics), [])
        parts.append("\n\n".join([title + format_table(mine, spec.cls.headline_metrics), *notes]))
    return "\n\n".join(parts) + f"\n\nrun folder: {recipe.output_dir}"


def launch_torchrun(args: argparse.Namespace) -> int | None:
    """With ``--nproc N`` (N > 1) outside torchrun: run this same command under torchrun with N
    processes on this machine and return its exit status; None when this process should do the work."""
    from seqkd import distributed

    if args.nproc <= 1 or distributed.requested_world_size() > 1:
        return None
    import subprocess

    # torchrun's own parser would take a --nproc among the command's arguments for an abbreviation
    # of its --nproc-per-node, so the command goes without it.
    argv = [a for a in args.argv if not a.startswith("--nproc=")]
    if "--nproc" in argv:
        at = argv.index("--nproc")
        del argv[at : at + 2]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               "-m", "seqkd", *argv]
    return subprocess.run(command).returncode


def cmd_run(args: argparse.Namespace) -> int:
    launched = None if args.dry_run else launch_torchrun(args)
    if launched is not None:
        return launched
    from seqkd import distributed
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    if args.seeds is not None:
        return run_seeds(args)
    recipe = load_recipe(args.file, args.overrides)
    print_warnings(recipe)
    engine = Engine(recipe, force=args.force, force_stages=args.force_stage)
    if args.dry_run:
        plans = engine.plan(args.stage)
        width = max(len(p.stage) for p in plans)
        for p in plans:
            print(f"{p.stage.ljust(width)}  {p.action:<8} {p.reason}")
        return 2 if any(p.action == "refuse" for p in plans) else 0
    distributed.init()
    reports = engine.run(only=args.stage)
    main = distributed.is_main()
    distributed.finish()
    if not main:  # rank 0 prints the one table
        return 0
    print(format_reports(recipe, reports))
    return 0


def run_seeds(args: argparse.Namespace) -> int:
    """``seqkd run --seeds``: the recipe's stages once per seed, and one summary file."""
    from seqkd import distributed
    from seqkd.seeds import format_summary, run_seeds, summarise, write_summary

    clash = [flag for flag, given in (("--stage", args.stage), ("--force-stage", args.force_stage), ("--dry-run", args.dry_run)) if given]
    if clash:
        raise SeqkdError(f"--seeds runs every stage of the recipe; it cannot be combined with {', '.join(clash)}")
    distributed.init()
    runs = run_seeds(args.file, args.seeds, shared=set(args.shared or ()), overrides=args.overrides, force=args.force)
    main = distributed.is_main()
    distributed.finish()
    if main:
        summary = summarise(runs, args.baseline)
        path = write_summary(runs, summary)
        print(f"{format_summary(summary)}\n\nsummary: {path}")
    return 0


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers, e.g. 1,2,3") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct seeds, e.g. 1,2,3")
    return seeds


def cmd_report(args: argparse.Namespace) -> int:
    from seqkd.report import write_report

    print(write_report(args.run_dir, args.output))
    return 0


def cmd_cache_build(args: argparse.Namespace) -> int:
    launched = launch_torchrun(args)
    if launched is not None:
        return launched
    from seqkd import distributed
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    engine = Engine(load_recipe(args.file, args.overrides), force=args.force)
    distributed.init()
    built = engine.build_caches(args.stage)
    main = distributed.is_main()
    distributed.finish()
    for folder in built if main else []:
        print(folder)
    return 0


def cmd_cache_info(args: argparse.Namespace) -> int:
    from seqkd.cache import Artifact

    artifact = Artifact.read(args.folder)
    m = artifact.manifest
    print(f"{args.folder}\n  kind:    {m['kind']}\n  key:     {m['key']}")
    for part, value in m["parts"].items():
        print(f"    {part}: {value}")
    print(f"  items:   {m['num_items']} in {len(m['shards'])} shards of {m['shard_size']}")
    print(f"  meta:    {m['meta']}")
    print(f"  size:    {artifact.nbytes():,} bytes ({artifact.nbytes() / max(m['num_items'], 1):.0f} per example)")
    return 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    from seqkd.cache import Artifact

    Artifact.read(args.folder).verify(hashes=True)
    print(f"{args.folder}: ok")
    return 0


def cmd_cache_clean(args: argparse.Namespace) -> int:
    import shutil

    from seqkd.recipe import load_recipe

    root = load_recipe(args.file, args.overrides).output_dir / "_cache"
    targets = [root / s for s in args.stage] if args.stage else [root]
    for target in targets:
        if target.exists():
            shutil.rmtree(target)
            print(f"removed {target}")
    return 0


def add_nproc_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nproc", type=int, default=1, metavar="N",
        help="run with N processes on this machine (one per GPU; data parallel) by starting torchrun; "
             "see docs/distributed.md for several machines",
    )


def add_cache_commands(sub) -> None:
    cache = sub.add_parser(
        "cache",
        help="teacher-output caches: build | info | verify | clean",
        description=(
            "Teacher outputs that methods cache are built once per stage into <output.dir>/_cache/<stage>/ "
            "and read by every later run. A cache is keyed by every teacher's model file, the method's "
            "settings, the vocabulary and the data; a cache whose key does not match is refused, naming what changed."
        ),
    )
    commands = cache.add_subparsers(dest="cache_command", required=True)
    p = commands.add_parser("build", help="build the caches a recipe's stages need, without training them")
    p.add_argument("file", type=Path)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--stage", action="append", help="only these stages")
    p.add_argument("--force", action="store_true", help="replace caches built for other inputs")
    add_nproc_option(p)
    p.set_defaults(func=cmd_cache_build)
    p = commands.add_parser("info", help="show a cache's key, size and bytes per token")
    p.add_argument("folder", type=Path)
    p.set_defaults(func=cmd_cache_info)
    p = commands.add_parser("verify", help="check every shard's size and sha256 against the manifest")
    p.add_argument("folder", type=Path)
    p.set_defaults(func=cmd_cache_verify)
    p = commands.add_parser("clean", help="remove a recipe's caches (finished and unfinished)")
    p.add_argument("file", type=Path)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--stage", action="append", help="only these stages' caches")
    p.set_defaults(func=cmd_cache_clean)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; the tasks' own commands are added unless ``argv`` names a core command, so
    `seqkd run --nproc N` starts torchrun without loading every plugin first."""
    parser = argparse.ArgumentParser(prog="seqkd", description="Distil sequence models: teachers into small, fast students.")
    parser.add_argument("--version", action="version", version=f"seqkd {seqkd.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list plugins and the tasks and methods they add")
    p.add_argument("--verbose", action="store_true", help="also show each plugin's file, hooks and plugin API version")
    p.add_argument("--strict", action="store_true", help="exit non-zero if a plugin failed to load")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("new-plugin", help="write a ready-to-install method plugin package")
    p.add_argument("name", help="the method's name, as recipes will write it (e.g. my_method)")
    p.add_argument("--dir", type=Path, default=Path("."), help="where to create seqkd-<name>/ (default: here)")
    p.set_defaults(func=cmd_new_plugin)

    p = sub.add_parser("validate", help="check recipes; exit non-zero with the field and line of each problem")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_validate)

    for name, func, text in (
        ("show", cmd_show, "print the fully resolved recipe (defaults filled in)"),
        ("run", cmd_run, "run a recipe's stages (resumes and reuses finished stages)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("file", type=Path)
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. training.max_steps=200")
        p.set_defaults(func=func)
        if name == "run":
            p.add_argument("--force", action="store_true", help="replace stage folders of a different configuration")
            p.add_argument("--stage", action="append", help="run only these stages (earlier ones must be done)")
            p.add_argument("--force-stage", action="append", metavar="STAGE", help="retrain this stage even if its folder could be reused; the others are kept")
            p.add_argument("--dry-run", action="store_true", help="print, per stage, whether it would be reused, resumed, trained or refused, and why; train nothing")
            p.add_argument("--seeds", type=seed_list, metavar="1,2,3", help="run every stage once per seed and write <output.dir>/seeds.json (mean ± std, paired differences)")
            p.add_argument("--shared", type=lambda t: [x for x in t.split(",") if x], metavar="STAGE,...", help="with --seeds: stages run once and shared by every seed (e.g. the teacher)")
            p.add_argument("--baseline", metavar="STAGE", help="with --seeds: the stage every other is compared with, seed by seed")
            add_nproc_option(p)

    p = sub.add_parser("recipes", help="list the shipped recipes")
    p.set_defaults(func=cmd_recipes)
    p = sub.add_parser("report", help="write an HTML page about a run folder: curves, quality vs size/speed, seeds, recipe")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a recipe's output.dir, e.g. runs/quickstart")
    p.add_argument("--output", type=Path, metavar="PATH", help="the page to write (default: RUN_DIR/report/index.html); figures go beside it")
    p.set_defaults(func=cmd_report)
    add_cache_commands(sub)
    add_export_command(sub)
    wanted = next((a for a in argv or [] if not a.startswith("-")), None)
    if wanted in CORE_COMMANDS:
        return parser
    for command in sorted(get_registry().commands.values(), key=lambda c: c.name):  # the tasks' own commands
        p = sub.add_parser(command.name, help=command.help)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    args.argv = argv  # to start the same command under torchrun
    if getattr(args, "overrides", None) is None:
        args.overrides = []
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    except Exception as exc:  # errors a user can act on are printed without a traceback
        if isinstance(exc, (SeqkdError, OSError)):  # OSError: a file or device problem the message names
            from seqkd import distributed

            print(f"error{distributed.label()}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
