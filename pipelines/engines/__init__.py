"""Teacher engines behind one protocol (`TeacherEngine`), built from a TeacherConfig."""

from __future__ import annotations

from potstill.pipelines.engines.protocol import EngineFailure, Generation, Sample, TeacherEngine
from potstill.schemas.generation import SamplingConfig, TeacherConfig

__all__ = ["EngineFailure", "Generation", "Sample", "TeacherEngine", "build_engine"]


def build_engine(teacher: TeacherConfig, sampling: SamplingConfig) -> TeacherEngine:
    """The engine named by `teacher.engine` (imports its backend lazily)."""
    if teacher.engine == "vllm":
        from potstill.pipelines.engines.vllm_engine import VllmEngine

        return VllmEngine(teacher, sampling)
    raise ValueError(f"teacher.engine: unknown engine {teacher.engine!r}; use 'vllm'")
