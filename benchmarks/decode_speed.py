"""Decode speed of a recipe's trained models, measured together: sentences/s and ratio to the first.

Every model decodes the same sentences with the recipe's evaluation settings (fairseq2 beam
search), in alternating rounds so that machine noise hits all of them alike; the median is kept.

    .venv/bin/python -m benchmarks.decode_speed recipes/bible-en-es/quickstart.yaml [--sentences 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import alternating_speed, translation_speed
from seqkd.engine import Engine, count_parameters, load_trained_model
from seqkd.recipe import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    engine = Engine(recipe)
    engine.task()
    sources = [p.source for p in engine.task().pairs()["test"][: args.sentences]]
    models = {
        s.name: load_trained_model(engine.task(), engine.stage_dir(s.name) / "model.pt")[0]
        for s in recipe.stages
        if (engine.stage_dir(s.name) / "model.pt").exists()
    }
    speeds = alternating_speed(
        models, translation_speed(engine.task(), sources, recipe.only_task().evaluation), args.rounds
    )
    first = next(iter(speeds.values()))
    print(f"{len(sources)} test sentences, beam {recipe.only_task().evaluation.beam_size}, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} rounds")
    for name, median in speeds.items():
        print(f"{name:16s} {count_parameters(models[name]) / 1e6:6.2f}M params  {median:7.1f} sentences/s  {median / first:5.2f}x")


if __name__ == "__main__":
    main()
