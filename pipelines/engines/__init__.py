"""Teacher engines behind one protocol (`TeacherEngine`), built from a TeacherConfig."""

from __future__ import annotations

from potstill.pipelines.engines.protocol import EngineFailure, Generation, Sample, TeacherEngine
from potstill.schemas.generation import FaultsConfig, SamplingConfig, TeacherConfig

__all__ = ["EngineFailure", "Generation", "Sample", "TeacherEngine", "build_engine"]


def build_engine(teacher: TeacherConfig, sampling: SamplingConfig, faults: FaultsConfig | None = None) -> TeacherEngine:
    """The engine named by `teacher.engine` (imports its backend lazily).

    With `faults` (a test hook, default off) the engine is wrapped in
    `FaultyEngine`, which injects the configured failures.
    """
    if teacher.engine == "vllm":
        from potstill.pipelines.engines.vllm_engine import VllmEngine

        engine: TeacherEngine = VllmEngine(teacher, sampling)
    else:
        raise ValueError(f"teacher.engine: unknown engine {teacher.engine!r}; use 'vllm'")
    if faults is not None and faults.rules:
        from potstill.pipelines.engines.faulty import FaultPlan, FaultyEngine

        engine = FaultyEngine(engine, FaultPlan(faults))
    return engine
