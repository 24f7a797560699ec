#!/usr/bin/env bash
# Run the test suite in the project's virtual environment (created on first use).
# Arguments go to pytest, e.g. ./test.sh -q -m "not slow" tests/test_tokenizer.py
set -euo pipefail
cd "$(dirname "$0")"
source local/setup_env.sh
exec "$PY" -m pytest "$@"
