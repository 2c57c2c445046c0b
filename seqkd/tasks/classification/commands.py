"""``seqkd classify``: the classification task's command."""

from __future__ import annotations

import argparse

from seqkd.errors import DataError
from seqkd.hookspecs import Command
from seqkd.tasks.commands import add_stage_arguments, trained_stage


def _classify(args: argparse.Namespace) -> int:
    """Classify one text a line (``text<TAB>second text`` for pair tasks); print ``label<TAB>probability``."""
    _, task, model, lines = trained_stage(args)
    pairs = task.config.data.pair_field is not None
    inputs = []
    for number, line in enumerate(lines, 1):
        text, tab, pair = line.partition("\t") if pairs else (line, "", "")
        if not text.strip() or (pairs and not pair.strip()):
            what = "`text<TAB>second text`" if pairs else "a text"
            raise DataError(f"{args.input or '<stdin>'}:{number}: empty; expected {what}")
        inputs.append((text.strip(), pair.strip() if pairs else None))
    for label, probability in task.classify(model, inputs):
        print(f"{label}\t{probability}")
    return 0


CLASSIFY = Command(
    "classify", "classify stdin or a file (one text a line; text<TAB>second text for pair tasks) with a trained stage's model",
    lambda parser: add_stage_arguments(parser, "classifies"), _classify,
)
