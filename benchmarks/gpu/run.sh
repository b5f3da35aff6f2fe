#!/usr/bin/env bash
# The GPU proof, one command: bash benchmarks/gpu/run.sh [--tiny] [--prompts N] [--logprobs K] [--student-steps N]
# Prints progress on stderr and ONE JSON object on stdout, last (see benchmarks/gpu/proof.py, docs/PERFORMANCE.md).
# Python: $POTSTILL_PYTHON, else the repository's .venv, else python3 on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${POTSTILL_PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" -m benchmarks.gpu.proof "$@"
