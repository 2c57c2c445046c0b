"""``seqkd export``: a trained stage's model in a format that serves it outside seqkd.

The stage is found the way ``seqkd translate`` finds it: a recipe (with the same overrides) and
``--stage``; a run folder (a recipe's ``output.dir``) works too, read through the recipe its
``stage.json`` names. Whether a stage can be exported is the task's to say, through a capability
(``ctranslate2``: encoder-decoder Transformers of translation and summarization); what a format
cannot express is refused with one line (exit status 2) naming the part, before anything is written.

The export is written into a temporary folder beside its destination and renamed into place, so a
crash leaves the previous export or none, never a partial one. The folder holds the format's files
plus ``seqkd-export.json``: where the model came from, and how to decode with it as seqkd does.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqkd.errors import SeqkdError
from seqkd.fileio import fsync_path

FORMATS = {"ctranslate2": "ctranslate2"}  # --format -> the task capability it needs
QUANTIZATIONS = ("float32", "int8_float32", "int8")
MANIFEST = "seqkd-export.json"


class ExportError(SeqkdError):
    """A stage, or a model, that the requested export format cannot express."""


# -- finding the stage ------------------------------------------------------------------------------


def _recipe_of_run(run: Path, stage: str, overrides: list[str]):
    """The recipe a run folder was made from, with its output.dir pointed at ``run``."""
    from seqkd.fileio import read_json
    from seqkd.recipe import load_recipe

    status = run / stage / "stage.json"
    if not status.exists():
        stages = sorted(p.parent.name for p in run.glob("*/stage.json"))
        if not stages:
            raise ExportError(f"{run}: not a seqkd run folder (no <stage>/stage.json in it); give a recipe or a recipe's output.dir")
        raise ExportError(f"{run}: no stage {stage!r} (stages: {', '.join(stages)})")
    recipe = Path(read_json(status, "stage status").get("recipe", ""))
    if not recipe.is_file():
        raise ExportError(
            f"{run}: its stage {stage!r} was made from the recipe {recipe}, which is not found from here; "
            "run seqkd export on that recipe file instead"
        )
    return load_recipe(recipe, [*overrides, f"output.dir={run}"])


def trained_stage(target: Path, stage_name: str, overrides: list[str], capability: str, format_name: str):
    """(recipe, stage, task, model) of a finished stage whose task offers ``capability``."""
    from seqkd.engine import Engine
    from seqkd.plugins import get_registry
    from seqkd.recipe import load_recipe

    recipe = _recipe_of_run(target, stage_name, overrides) if target.is_dir() else load_recipe(target, overrides)
    stage = recipe.stage(stage_name)  # an unknown name is refused listing the stages
    cls = recipe.tasks[stage.task].cls
    if capability not in cls.capabilities:
        able = sorted(name for name, task in get_registry().tasks.items() if capability in task.capabilities)
        raise ExportError(
            f"stage {stage_name!r} trains a model of the {cls.name!r} task, which {format_name} cannot express: only the "
            f"encoder-decoder Transformers of {', '.join(able) or 'no installed task'} can be exported (tasks offering the "
            f"{capability!r} capability); no projection would make it expressible"
        )
    _, task, model = Engine(recipe).trained_model(stage_name)  # an unfinished stage is refused naming the command
    return recipe, stage, task, model.eval()


# -- writing a folder atomically --------------------------------------------------------------------


def _fsync_tree(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        fsync_path(path)


def write_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary folder beside ``target`` and rename it to ``target``.

    An existing ``target`` is replaced only when it is an earlier export (it holds the manifest);
    it is renamed aside first and removed once the new folder is in place, so a crash at any point
    leaves a complete export at ``target`` or a complete one beside it, never a partial one.
    """
    if target.exists() and not (target / MANIFEST).is_file():
        raise ExportError(f"{target} exists and is not a seqkd export; choose another --output or remove it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; an export is as readable as any folder made here
    old = None
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "export")
        os.replace(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "export").exists() and not target.exists():
            os.replace(old / "export", target)  # put the previous export back
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ExportError(f"no space left on device writing {target}; nothing was changed there; free space and run the same command again") from exc
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# -- the command ----------------------------------------------------------------------------------


def export(args: argparse.Namespace) -> Path:
    """Export the stage ``args`` name; returns the folder written."""
    import seqkd
    from seqkd.hashing import file_sha256

    capability = FORMATS[args.format]
    recipe, stage, task, model = trained_stage(args.file, args.stage, list(args.overrides), capability, args.format)
    target = args.output or recipe.output_dir / "_export" / f"{stage.name}-{args.format}-{args.quantization}"
    model_file = recipe.output_dir / stage.name / "model.pt"
    manifest: dict[str, Any] = {
        "format": args.format, "quantization": args.quantization, "stage": stage.name, "task": task.name,
        "recipe": str(recipe.path), "model_file": str(model_file), "model_sha256": file_sha256(model_file),
        "seqkd": seqkd.__version__,
    }

    def fill(folder: Path) -> None:
        manifest.update(task.export_ctranslate2(model, folder, args.quantization, stage.evaluation))
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    write_folder(target, fill)
    return target


def cmd_export(args: argparse.Namespace) -> int:
    target = export(args)
    manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"wrote {target} ({args.format}, {args.quantization}, {size / 1e6:.1f} MB)")
    if "translate_options" in manifest:
        options = ", ".join(f"{key}={value!r}" for key, value in manifest["translate_options"].items())
        print(f"decode: ctranslate2.Translator({str(target)!r}).translate_batch(pieces, {options}, "
              f"max_decoding_length=...) with pieces from {manifest['sentencepiece_model']} (see {MANIFEST})")
    return 0


def add_export_command(sub: Any) -> None:
    """``seqkd export`` on the ``seqkd`` parser's subcommands."""
    p = sub.add_parser(
        "export", help="write a trained stage's model for serving outside seqkd (CTranslate2)",
        description="Export a finished stage's model: a CTranslate2 model folder with the sentencepiece model beside it. "
                    "What the format cannot express is refused (exit status 2), naming the part.",
    )
    p.add_argument("file", type=Path, metavar="RUN_OR_RECIPE", help="the recipe (as for `seqkd translate`), or a run folder (its output.dir)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, as for `seqkd run`")
    p.add_argument("--stage", required=True, help="which stage's model to export")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="the format to write")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="float32",
                   help="weight type: float32 (decodes as PyTorch does, token for token) or int8 (smaller, faster) (default: float32)")
    p.add_argument("--output", type=Path, metavar="DIR",
                   help="the folder to write (default: <output.dir>/_export/<stage>-<format>-<quantization>); an earlier export there is replaced")
    p.set_defaults(func=cmd_export)
