"""``seqkd predict``: the NER task's command."""

from __future__ import annotations

import argparse

from seqkd.hookspecs import Command
from seqkd.tasks.ner.corpus import split_columns
from seqkd.tasks.commands import add_stage_arguments, trained_stage


def _predict(args: argparse.Namespace) -> int:
    """Tag sentences, one per line with tokens between ASCII spaces or tabs (as in CoNLL files; a
    U+3000 inside a token stays in it), as CoNLL (token, tag; blank line between)."""
    stage, task, model, lines = trained_stage(args)
    sentences = [split_columns(line) for line in lines if line.strip(" \t")]
    for tokens, tags in zip(sentences, task.tag(model, sentences)):
        print("\n".join(f"{token}\t{tag}" for token, tag in zip(tokens, tags)) + "\n")
    return 0


PREDICT = Command(
    "predict", "tag stdin or a file (one whitespace-tokenised sentence a line) with a trained stage's model",
    lambda parser: add_stage_arguments(parser, "tags"), _predict,
)
