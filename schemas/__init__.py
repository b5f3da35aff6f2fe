"""Pydantic models for every record on disk and every config.

No Ray, vLLM or torch here: these models are imported by drivers, actors,
tests and users' tools alike.
"""

from potstill.schemas.base import SCHEMA_VERSION, StrictModel
from potstill.schemas.manifest import FailedPrompt, ManifestShard, RunManifest, ShardCommit, ShardStats
from potstill.schemas.generation import (
    SHIPPED_TEACHER,
    GenerationConfig,
    OutputConfig,
    PromptsConfig,
    ReplicasConfig,
    SamplingConfig,
    StorageConfig,
    TeacherConfig,
    VerifyConfig,
)
from potstill.schemas.loading import ConfigError, load_config, validate_config
from potstill.schemas.prompt import Message, PromptRecord, prompt_id_of
from potstill.schemas.trace import TraceRecord, trace_arrow_schema, trace_schema_hash
from potstill.schemas.training import TrainingConfig

__all__ = [
    "SCHEMA_VERSION", "SHIPPED_TEACHER", "ConfigError", "FailedPrompt", "GenerationConfig", "ManifestShard",
    "Message", "OutputConfig", "PromptRecord", "PromptsConfig", "ReplicasConfig", "RunManifest", "SamplingConfig",
    "ShardCommit", "ShardStats", "StorageConfig", "StrictModel", "TeacherConfig", "TraceRecord", "TrainingConfig",
    "VerifyConfig", "load_config", "prompt_id_of", "trace_arrow_schema", "trace_schema_hash", "validate_config",
]
