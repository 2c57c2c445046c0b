"""What the task adapters' own commands share: a recipe's trained stage and the lines to serve."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from seqkd.errors import DataError
from seqkd.recipe import Stage
from seqkd.tasks.base import TaskAdapter


def add_stage_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("file", type=Path, help="the recipe")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, as for `seqkd run`")
    parser.add_argument("--stage", required=True, help=f"which stage's model {what}")
    parser.add_argument("--input", type=Path, help="input file, one item a line (default: stdin)")


def trained_stage(args: argparse.Namespace) -> tuple[Stage, TaskAdapter, torch.nn.Module, list[str]]:
    """The stage, its prepared task, its trained model and the input lines (the file's or stdin's)."""
    from seqkd.engine import Engine
    from seqkd.recipe import load_recipe

    stage, task, model = Engine(load_recipe(args.file, args.overrides)).trained_model(args.stage)
    return stage, task, model, read_input(args.input)


def read_input(path: Path | None) -> list[str]:
    """Lines of ``path`` or of stdin; bytes that are not UTF-8 are refused naming the line."""
    raw = path.read_bytes() if path else sys.stdin.buffer.read()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append(line.decode("utf-8").removeprefix("\ufeff") if number == 1 else line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(f"{path or '<stdin>'}:{number}: not valid UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); convert the input to UTF-8") from None
    return [line.rstrip("\r") for line in out]
