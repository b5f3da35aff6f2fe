"""The teacher replica actor: one engine, many units in flight, shards committed in place.

A thin Ray async actor over `UnitRunner` (generation + verification) and
`persist_unit` (write, verify, commit). Results never pass through the
controller: each replica commits its own shards, so the controller's memory
does not grow with the data. The one exception is `generate(unit)`, used for
the sub-units of a split unit (see `pipelines/generate/supervision.py`): it returns
the rows and the controller commits the merged shard. Each replica records its
own Prometheus metrics (`potstill.actors.metrics`): tokens, traces by verdict,
request latency.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from potstill.actors.metrics import MeteredEngine, ReplicaMetrics
from potstill.pipelines.engines import EngineFailure, build_engine
from potstill.pipelines.engines.faulty import FaultPlan, crash_before_commit
from potstill.pipelines.generate.plan import WorkUnit
from potstill.pipelines.models.assets import check_teacher
from potstill.pipelines.observe.redact import configure_logging
from potstill.pipelines.output.run_record import read_run_record
from potstill.pipelines.output.shard_output import persist_unit
from potstill.pipelines.output.shard_writer import warm_up as warm_up_writer
from potstill.pipelines.output.storage import Storage
from potstill.pipelines.generate.unit_runner import UnitResult, UnitRunner
from potstill.pipelines.verify import build_judge
from potstill.schemas.manifest import RunRecord, ShardCommit
from potstill.schemas.generation import GenerationConfig


class TeacherReplica:
    """Holds one teacher engine; `process(unit)` generates, verifies and commits a shard."""

    def __init__(self, config_json: str, out_uri: str, replica_id: str, engine_kwargs: dict[str, Any] | None = None):
        self.cfg = GenerationConfig.model_validate_json(config_json)
        configure_logging(self.cfg.model_dump())
        if engine_kwargs:
            self.cfg.teacher.engine_kwargs = {**self.cfg.teacher.engine_kwargs, **engine_kwargs}
        self.replica_id = replica_id
        self.storage = Storage(out_uri, self.cfg.output.storage)
        self.metrics = ReplicaMetrics(self.cfg.resolved_run_id(), replica_id)
        self.engine = build_engine(self.cfg.teacher, self.cfg.sampling, self.cfg.faults,
                                   replicas_sharing=self.cfg.replicas.max_replicas)
        self._api_usage = getattr(self.engine, "usage", None)  # an API engine's HTTP counts (OpenAIEngine)
        self.engine = MeteredEngine(self.engine, self.metrics)
        self.faults = FaultPlan(self.cfg.faults) if self.cfg.faults and self.cfg.faults.rules else None
        self.runner = UnitRunner(self.engine, build_judge(self.cfg.verify), self.cfg.sampling, self.cfg.verify)
        self._start_task: asyncio.Task | None = None
        self.record: RunRecord | None = None  # run.json, read when the engine starts
        self.units_done = 0

    async def start(self) -> dict[str, Any]:
        """Load the engine (once; concurrent callers share the same start)."""
        import ray

        if self._start_task is None:
            self._start_task = asyncio.get_running_loop().create_task(self._start_once())
        try:
            await self._start_task
        except Exception as exc:
            raise EngineFailure(f"teacher engine failed to start on {self.replica_id}: {exc}") from exc
        return {"replica_id": self.replica_id, "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "model": self.engine.model_name, "revision": self.engine.revision,
                "batch_capacity": self.engine.batch_capacity}

    async def _start_once(self) -> None:
        await asyncio.to_thread(self._check_teacher)
        await self.engine.start()
        await asyncio.to_thread(warm_up_writer)

    def _check_teacher(self) -> None:
        """Refuse to start on a teacher folder other than the one the run pinned (stat only, no weight hashing);
        rows then carry the run's revision."""
        self.record = read_run_record(self.storage)
        if self.record is None or self.record.teacher is None:
            return  # a run of an older potstill: nothing pinned
        check_teacher(self.cfg.teacher, self.record.teacher)
        self.engine.revision = self.record.teacher.revision

    async def process(self, unit: WorkUnit) -> ShardCommit:
        """Generate, verify, write and commit one unit's shard."""
        result = await self.generate(unit)
        await asyncio.to_thread(crash_before_commit, self.faults, self.storage, unit, result, self.cfg.output)
        commit = await asyncio.to_thread(persist_unit, self.storage, unit, result, self.cfg.output, self.record)
        self.units_done += 1
        self.metrics.committed()
        return commit

    async def generate(self, unit: WorkUnit) -> UnitResult:
        """Generate and verify a (sub-)unit's rows without writing them."""
        await self.start()
        result = await self.runner.run(unit)
        self.metrics.result(result.stats)
        if self._api_usage is not None:
            self.metrics.api_usage(self._api_usage())
        return result

    async def load(self, units: int = 0, below: int = 1, timeout_s: float = 0.0) -> int:
        """Engine sequences asked for and not yet returned, reported once this replica has started `units` units
        and fewer than `below` remain (or after `timeout_s`); the controller admits another unit when few remain."""
        return await self.runner.wait_for_load(units, below, timeout_s)

    def stats(self) -> dict[str, int]:
        """Units committed, engine requests sent, and the tokens the engine processed (work of failed units
        included: the run report charges it as failed); an API engine adds its HTTP counts."""
        out = {"units_done": self.units_done, "engine_requests": self.runner.requests,
               "prompt_tokens": self.runner.prompt_tokens_processed, "completion_tokens": self.runner.completion_tokens}
        if self._api_usage is not None:
            out.update({f"api_{k}": v for k, v in self._api_usage().items()})
        return out

    async def shutdown(self) -> None:
        """Stop the engine, then outlive the metrics report that carries the last commit (the pool kills the actor
        once this returns)."""
        await self.engine.shutdown()
        await asyncio.sleep(self.metrics.unexported_s())
