"""The encoder-decoder tasks' command: decode stdin or a file with a trained stage's model
(``seqkd translate``, ``seqkd summarize``)."""

from __future__ import annotations

import argparse

from seqkd.hookspecs import Command
from seqkd.tasks.commands import add_stage_arguments, trained_stage


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "decodes")
    parser.add_argument("--beam", type=int, help="beam size (default: the stage's evaluation.beam_size)")


def _decode(args: argparse.Namespace) -> int:
    stage, task, model, lines = trained_stage(args)
    settings = stage.evaluation.model_copy(update={"beam_size": args.beam} if args.beam else {})
    print("\n".join(task.predict(model, lines, settings) if lines else []))
    return 0


def decode_command(name: str, what: str) -> Command:
    """The command ``name`` that decodes ``what`` (one a line) into the task's outputs."""
    return Command(name, f"{name} stdin or a file ({what}, one a line) with a trained stage's model", _arguments, _decode)
