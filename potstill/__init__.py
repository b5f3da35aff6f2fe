"""potstill: distill a teacher model into a student at cluster scale.

    potstill generate examples/arithmetic.yaml   # teacher replicas -> verified traces
    potstill inspect runs/<run_id>               # what a run produced
    potstill.read_run("runs/<run_id>").to_hf()   # its committed traces as a Hugging Face dataset
    potstill.scale("<run_id>", replicas=4)       # a live run's teacher replicas; potstill.status("<run_id>")

The top-level package stays light: heavy libraries (vllm, torch, ray) load
only inside the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "read_run", "scale", "status", "verify"]


def __getattr__(name: str):
    # Lazy: `potstill.verify` pulls math-verify/sympy only when first used.
    if name == "verify":
        from potstill.pipelines.verify import verify

        return verify
    # Lazy: `potstill.read_run` pulls pyarrow and s3fs only when first used.
    if name == "read_run":
        from potstill.pipelines.output.reader import read_run

        return read_run
    # Lazy: `potstill.scale` / `potstill.status` connect to Ray only when called.
    if name == "scale":
        from potstill.pipelines.jobs.run_control import scale_run

        return scale_run
    if name == "status":
        from potstill.pipelines.jobs.run_control import run_status

        return run_status
    raise AttributeError(f"module 'potstill' has no attribute {name!r}")
