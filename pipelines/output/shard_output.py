"""Persist one unit's result: write the shard, verify it, commit it."""

from __future__ import annotations

from potstill.pipelines.output.commit import commit_shard
from potstill.pipelines.generate.plan import WorkUnit
from potstill.pipelines.output.shard_writer import records_to_table, write_shard
from potstill.pipelines.generate.unit_runner import UnitResult
from potstill.schemas.manifest import ShardCommit
from potstill.schemas.generation import OutputConfig


def persist_unit(storage, unit: WorkUnit, result: UnitResult, output: OutputConfig) -> ShardCommit:
    """Write the rows as a new attempt object, verify it, then commit it (exactly once)."""
    table = records_to_table(result.rows)
    written = write_shard(storage, unit.run_id, unit.shard_id, table, output.compression, output.compression_level)
    return commit_shard(storage, written, unit.run_id, unit.shard_id, unit.prompt_ids, result.failed, result.stats)
