"""potstill: distill a teacher model into a student at cluster scale.

    potstill generate examples/arithmetic.yaml   # teacher replicas -> verified traces
    potstill inspect runs/<run_id>               # what a run produced

The top-level package stays light: heavy libraries (vllm, torch, ray) load
only inside the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "verify"]


def __getattr__(name: str):
    # Lazy: `potstill.verify` pulls math-verify/sympy only when first used.
    if name == "verify":
        from potstill.pipelines.verify import verify

        return verify
    raise AttributeError(f"module 'potstill' has no attribute {name!r}")
