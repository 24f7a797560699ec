# Sourced by test.sh and run.sh: make sure .venv exists and holds this project, editable, with
# the extras the tests use (dev; web for `zipa serve`).
# Torch goes in first (the CPU wheel), so that no other package pulls a CUDA build.
# The editable install is skipped while .venv/.zipa-installed is newer than pyproject.toml.

ZIPA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ZIPA_ROOT/.venv"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
fi

if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q "torch>=2.4"
fi

if [ ! "$VENV/.zipa-installed" -nt "$ZIPA_ROOT/pyproject.toml" ]; then
    "$PY" -m pip install -q -e "$ZIPA_ROOT[dev,web]"
    touch "$VENV/.zipa-installed"
fi
