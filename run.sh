#!/usr/bin/env bash
# Run the encoder benchmark in the project's virtual environment (created on first use).
# Arguments go to benchmarks/encoder.py.
set -euo pipefail
cd "$(dirname "$0")"
source local/setup_env.sh
exec "$PY" benchmarks/encoder.py "$@"
