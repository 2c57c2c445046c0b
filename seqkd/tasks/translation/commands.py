"""``seqkd translate``: the translation task's command."""

from __future__ import annotations

import argparse

from seqkd.hookspecs import Command
from seqkd.tasks.commands import add_stage_arguments, trained_stage


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "translates")
    parser.add_argument("--beam", type=int, help="beam size (default: the stage's evaluation.beam_size)")


def _translate(args: argparse.Namespace) -> int:
    stage, task, model, lines = trained_stage(args)
    settings = stage.evaluation.model_copy(update={"beam_size": args.beam} if args.beam else {})
    hypotheses = task.translate(model, [line.strip() for line in lines], settings) if lines else []
    print("\n".join(hypotheses))
    return 0


TRANSLATE = Command("translate", "translate stdin or a file with a trained stage's model", _arguments, _translate)
