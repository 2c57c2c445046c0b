"""The ``asr`` task's commands: ``seqkd speech-data`` builds the synthesised corpus its recipes
read (they also build it on first use), ``seqkd transcribe`` runs a trained stage's model."""

from __future__ import annotations

import argparse
from pathlib import Path

from seqkd.hookspecs import Command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="the folder to build it in")
    p.add_argument("--corpus", type=Path, help="source JSON lines (default: data/debian-descriptions/classification.jsonl.gz of the repository)")
    p.add_argument("--language", help="translation language: de, fr, it or da (default: it)")
    p.add_argument("--max-train", type=int, metavar="N", help="the first N usable train rows (default: 8000)")
    p.add_argument("--seed", type=int, help="seeds every random choice (default: 0)")
    p.add_argument("--workers", type=int, metavar="W", help="worker processes; the output does not depend on it (default: 2)")
    p.add_argument("--force", action="store_true", help="rebuild a folder built with other settings")


def _speech_data(args: argparse.Namespace) -> int:
    from seqkd.tasks.asr.synthesize import build_speech_corpus, make_config, repository_path

    given = {"language": args.language, "max_train": args.max_train, "seed": args.seed, "workers": args.workers,
             "corpus": str(args.corpus) if args.corpus else None}
    config = make_config(**{k: v for k, v in given.items() if v is not None})
    corpus = args.corpus if args.corpus else repository_path(config.corpus)
    print(build_speech_corpus(config, corpus, args.out, force=args.force))
    return 0


SPEECH_DATA = Command(
    "speech-data", "synthesise the English speech -> translation corpus of the asr recipes (eSpeak NG, offline)", _arguments, _speech_data,
)
