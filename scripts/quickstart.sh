#!/usr/bin/env bash
# Set up .venv if needed, then train a small teacher on the shipped Bible en-es corpus, distil a
# baseline and a word-KD student, and print their quality, size and speed (~15 min on 2 cores).
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
exec seqkd run recipes/bible-en-es/quickstart.yaml "$@"
