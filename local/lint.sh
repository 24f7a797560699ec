#!/usr/bin/env bash
# Lint and format check (ruff) and type-check (mypy) with the settings in pyproject.toml: the package, the root
# scripts, the recipes and local/. Both tools always run; the exit status is non-zero when either
# finds something. Arguments: other paths to check instead (relative to the repository root).
# PY: the Python with ruff and mypy (default: the project's .venv, created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
    source local/setup_env.sh
fi
if [ $# -eq 0 ]; then
    set -- zipa zipa_ctc_inference.py zipa_transducer_inference.py data_module.py \
        zipformer_crctc zipformer_transducer local
fi
status=0
"$PY" -m ruff check "$@" || status=1
"$PY" -m ruff format --check "$@" || status=1
"$PY" -m mypy "$@" || status=1
exit "$status"
