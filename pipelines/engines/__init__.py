"""Teacher engines behind one protocol (`TeacherEngine`), built from a TeacherConfig."""

from __future__ import annotations

from potstill.pipelines.engines.protocol import EngineFailure, Generation, Sample, TeacherEngine
from potstill.schemas.generation import FaultsConfig, SamplingConfig, TeacherConfig

__all__ = ["EngineFailure", "Generation", "Sample", "TeacherEngine", "build_engine"]


def build_engine(teacher: TeacherConfig, sampling: SamplingConfig, faults: FaultsConfig | None = None,
                 replicas_sharing: int = 1) -> TeacherEngine:
    """The engine named by `teacher.engine` (imports its backend lazily).

    `replicas_sharing`: how many replicas may share an API endpoint's budgets
    (replicas.max_replicas); each engine takes an equal share. With `faults`
    (a test hook, default off) the engine is wrapped in `FaultyEngine`, which
    injects the configured failures.
    """
    if teacher.engine == "vllm":
        from potstill.pipelines.engines.vllm_engine import VllmEngine

        engine: TeacherEngine = VllmEngine(teacher, sampling)
    elif teacher.engine == "openai":
        from potstill.pipelines.engines.openai_engine import OpenAIEngine
        from potstill.pipelines.engines.rate_limit import per_replica_limits

        assert teacher.api is not None  # TeacherConfig requires it for engine openai
        engine = OpenAIEngine(teacher, sampling, per_replica_limits(teacher.api, replicas_sharing))
    else:
        raise ValueError(f"teacher.engine: unknown engine {teacher.engine!r}; use 'vllm' or 'openai'")
    if faults is not None and faults.rules:
        from potstill.pipelines.engines.faulty import FaultPlan, FaultyEngine

        engine = FaultyEngine(engine, FaultPlan(faults))
    return engine
