"""Configs shipped inside the package: the embedded default that `potstill demo` runs.

`examples/arithmetic.yaml` and `examples/distill_arithmetic.yaml` in a checkout
are links to these files, so a user edits the same config the demo runs.
"""

from __future__ import annotations

from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parent
GENERATION_DEMO = CONFIGS_DIR / "arithmetic.yaml"
TRAINING_DEMO = CONFIGS_DIR / "distill_arithmetic.yaml"
