# Sourced by the other scripts: make sure .venv exists and holds seqkd with its pinned dependencies.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="$REPO/.venv"
STAMP="$VENV/.seqkd-installed"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
WANT="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # libsndfile for fairseq2 comes from the soundfile wheel (see seqkd/runtime.py): no system packages.
    "$VENV/bin/python" -m pip install --quiet -e "$REPO[dev]"
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$REPO"
