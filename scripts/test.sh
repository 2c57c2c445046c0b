#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
exec python -m pytest -q "$@"
