"""The generation controller: plans a run, feeds units to replicas, supervises, finalizes.

It runs inside the controller actor (`actors/controller.py`). The loop keeps
`units_in_flight` units queued on every replica (backpressure: the data never
passes through here, and memory holds one unit per in-flight slot however
many prompts the run has), replaces a replica that died, broke
(`EngineFailure`) or made no progress within `unit_timeout_s`, requeues its
units, and records a unit's prompts as failed after `max_attempts`.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from potstill.pipelines.commit import committed_shard_ids, finalize_run
from potstill.pipelines.ingest import IngestReport, iter_prompts
from potstill.pipelines.model_assets import teacher_revision
from potstill.pipelines.plan import RunPlan, WorkUnit, iter_units, plan_run
from potstill.pipelines.run_record import claim_run
from potstill.pipelines.shard_output import persist_unit
from potstill.pipelines.storage import Storage
from potstill.pipelines.unit_runner import UnitResult
from potstill.schemas.commit import FailedPrompt, ShardCommit, ShardStats
from potstill.schemas.generation import GenerationConfig

log = logging.getLogger("potstill.controller")


@dataclass
class Progress:
    """What the CLI's progress bar shows; updated as shards commit."""

    run_id: str = ""
    phase: str = "planning"
    prompts_total: int = 0
    prompts_done: int = 0
    shards_total: int = 0
    shards_done: int = 0
    shards_skipped: int = 0
    replicas: int = 0
    replicas_replaced: int = 0
    units_retried: int = 0
    engine_requests: int = 0
    totals: ShardStats = field(default_factory=ShardStats)
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["totals"] = self.totals.model_dump()
        d["elapsed_s"] = time.time() - self.started_at
        return d


@dataclass
class _Entry:
    """A unit waiting for a replica: attempts so far, and whether it must run alone."""

    unit: WorkUnit
    attempts: int = 0
    exclusive: bool = False


@dataclass
class _Replica:
    name: str
    handle: Any
    inflight: set = field(default_factory=set)
    exclusive: bool = False
    last_progress: float = field(default_factory=time.monotonic)
    requests_seen: int = 0


class ReplicaFactory:
    """Creates replica actors with the resource plan; a seam for fault-injecting tests."""

    def __init__(self, cfg: GenerationConfig, out_uri: str):
        import ray

        from potstill.actors.teacher_replica import TeacherReplica
        from potstill.cluster.resources import engine_kwargs_for, replica_plan

        self.cfg, self.out_uri = cfg, out_uri
        gpus = ray.cluster_resources().get("GPU", 0)
        self.plan = replica_plan(cfg.teacher, cfg.replicas, gpus)
        self.engine_kwargs = engine_kwargs_for(cfg.teacher, self.plan)
        self.actor_cls = ray.remote(TeacherReplica)
        self.config_json = cfg.model_dump_json()
        self.count = 0

    def create(self) -> _Replica:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.count += 1
        name = f"replica-{self.count}"
        options = dict(self.plan.actor_options)
        if self.plan.uses_placement_group:
            pg = ray.util.placement_group(self.plan.bundles, strategy=self.plan.strategy)
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_capture_child_tasks=True)
        handle = self.actor_cls.options(**options).remote(self.config_json, self.out_uri, name, self.engine_kwargs)
        return _Replica(name, handle)


class GenerationController:
    """Plans, schedules, supervises and finalizes one generation run."""

    def __init__(self, cfg: GenerationConfig, out_uri: str):
        self.cfg = cfg
        self.run_id = cfg.resolved_run_id()
        self.out_uri = out_uri
        self.storage = Storage(out_uri, cfg.output.storage)
        self.progress = Progress(run_id=self.run_id)
        self.target_replicas = cfg.replicas.min_replicas
        self._stop = False

    # -- public, called through the actor -------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return self.progress.as_dict()

    def scale(self, replicas: int) -> int:
        """Set the replica target (clamped to min..max); applied by the loop."""
        r = self.cfg.replicas
        self.target_replicas = max(r.min_replicas, min(r.max_replicas, replicas))
        return self.target_replicas

    def run(self, factory: ReplicaFactory | None = None) -> dict[str, Any]:
        if self.storage.remote:
            self.storage.check_conditional_create()
        claim_run(self.storage, self.cfg, self.run_id)
        plan, report = self._plan()
        committed = committed_shard_ids(self.storage)
        todo = [s for s in plan.shard_ids if s not in committed]
        self.progress.shards_skipped = len(plan.shard_ids) - len(todo)
        self.progress.prompts_done = sum(n for s, n in zip(plan.shard_ids, plan.shard_sizes) if s in committed)
        if todo:
            self.progress.phase = "generating"
            self._generate(plan, set(todo), factory or ReplicaFactory(self.cfg, self.out_uri))
        self.progress.phase = "finalizing"
        teacher = self.cfg.teacher
        revision = teacher_revision(teacher.model, teacher.revision)
        manifest = finalize_run(self.storage, self.run_id, self.cfg.fingerprint(), teacher.model, revision, plan.shard_ids)
        self.progress.phase = "done"
        return {
            "run_id": self.run_id, "out": self.out_uri, "shards": len(manifest.shards),
            "shards_skipped": self.progress.shards_skipped, "totals": manifest.totals.model_dump(),
            "this_run": self.progress.totals.model_dump(),
            "failed_prompts": len(manifest.failed), "ingest": report.counts(),
            "engine_requests": self.progress.engine_requests,
            "replicas_replaced": self.progress.replicas_replaced, "units_retried": self.progress.units_retried,
            "elapsed_s": time.time() - self.progress.started_at,
            "generation_s": self._generation_s,
            "controller_peak_rss_mb": peak_rss_mb(),
        }

    # -- planning ----------------------------------------------------------------------------
    def _plan(self) -> tuple[RunPlan, IngestReport]:
        report = IngestReport()
        plan = plan_run(iter_prompts(self.cfg.prompts, self.cfg.output.storage, report), self.run_id,
                        self.cfg.output.prompts_per_shard)
        report.write(self.storage)
        if not plan.shard_ids:
            raise ValueError(f"prompts: no valid prompt in the source ({report.summary()}); see errors/ingest.jsonl in {self.out_uri}")
        self.progress.prompts_total = plan.total_prompts
        self.progress.shards_total = len(plan.shard_ids)
        return plan, report

    def _units(self, plan: RunPlan, todo: set[str]):
        """Second pass over the source: the units still to do, checked against the plan."""
        units = iter_units(iter_prompts(self.cfg.prompts, self.cfg.output.storage, IngestReport()), self.run_id,
                           self.cfg.output.prompts_per_shard)
        for expected, unit in zip(plan.shard_ids, units):
            if unit.shard_id != expected:
                raise RuntimeError(f"prompts.path changed while the run was planned (shard {unit.index} is "
                                   f"{unit.shard_id}, planned {expected}); re-run to plan again")
            if unit.shard_id in todo:
                yield unit

    # -- scheduling and supervision ------------------------------------------------------------
    def _generate(self, plan: RunPlan, todo: set[str], factory: ReplicaFactory) -> None:
        import ray

        rcfg = self.cfg.replicas
        units = self._units(plan, todo)
        retry: collections.deque[_Entry] = collections.deque()
        owner: dict[Any, tuple[_Replica, _Entry]] = {}
        replicas: list[_Replica] = []
        exhausted = False

        first = factory.create()
        ray.get(first.handle.start.remote())  # surfaces a bad model/config before any work is queued
        replicas.append(first)
        started = time.perf_counter()
        while True:
            while len(replicas) < self.target_replicas:
                replicas.append(factory.create())
            self.progress.replicas = len(replicas)
            for rep in replicas:
                while len(rep.inflight) < rcfg.units_in_flight and not rep.exclusive:
                    if not retry and not exhausted:
                        unit = next(units, None)
                        if unit is None:
                            exhausted = True
                        else:
                            retry.append(_Entry(unit))
                    if not retry or (retry[0].exclusive and rep.inflight):
                        break
                    entry = retry.popleft()
                    if not rep.inflight:
                        rep.last_progress = time.monotonic()
                    ref = rep.handle.process.remote(entry.unit)
                    rep.inflight.add(ref)
                    rep.exclusive = entry.exclusive
                    owner[ref] = (rep, entry)
            if not owner:
                break
            ready, _ = ray.wait(list(owner), num_returns=1, timeout=1.0)
            for ref in ready:
                if ref not in owner:  # already requeued with its replica
                    continue
                rep, entry = owner.pop(ref)
                rep.inflight.discard(ref)
                rep.exclusive = False
                try:
                    commit: ShardCommit = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - every failure kind is handled below
                    self._on_failure(exc, rep, entry, replicas, retry, owner)
                    continue
                rep.last_progress = time.monotonic()
                self._on_commit(commit)
            self._check_hung(replicas, time.monotonic())
            if self.target_replicas < rcfg.max_replicas and (retry or not exhausted):
                if all(len(r.inflight) >= rcfg.units_in_flight for r in replicas):
                    self.target_replicas += 1  # backlog with every replica full: scale up
        self._generation_s = time.perf_counter() - started
        for rep in replicas:
            self._collect_requests(rep)
            ray.kill(rep.handle)

    def _on_commit(self, commit: ShardCommit) -> None:
        p = self.progress
        p.shards_done += 1
        p.prompts_done += commit.stats.prompts
        p.totals = p.totals + commit.stats

    def _collect_requests(self, rep: _Replica) -> None:
        import ray

        try:
            stats = ray.get(rep.handle.stats.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - a dead replica's count is gone; nothing to add
            return
        self.progress.engine_requests += stats["engine_requests"] - rep.requests_seen
        rep.requests_seen = stats["engine_requests"]

    def _on_failure(self, exc: Exception, rep: _Replica, entry: _Entry, replicas: list[_Replica],
                    retry: collections.deque, owner: dict) -> None:
        """Requeue a failed unit; replace a dead or broken replica.

        When a replica dies, every unit on it is suspect but only one may be
        the poison: suspects re-run alone (`exclusive`), and only a failure
        while alone counts as an attempt, so a healthy unit is never failed
        for its neighbour.
        """
        import ray

        from potstill.pipelines.engines.protocol import EngineFailure

        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        broken = isinstance(exc, ray.exceptions.RayActorError) or (
            isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, EngineFailure))
        log.warning("unit %s failed on %s (attempt %d): %s", entry.unit.shard_id, rep.name, entry.attempts + 1, reason)
        if not broken:
            self._requeue(entry.unit, entry.attempts + 1, reason, exclusive=False, retry=retry)
            return
        victims = [entry] + [owner.pop(ref)[1] for ref in list(rep.inflight)]
        rep.inflight.clear()
        if rep in replicas:
            self._collect_requests(rep)
            ray.kill(rep.handle)
            replicas.remove(rep)
            self.progress.replicas_replaced += 1
        for victim in victims:
            if victim.exclusive:
                self._requeue(victim.unit, victim.attempts + 1, reason, exclusive=True, retry=retry)
            else:
                self.progress.units_retried += 1
                retry.append(_Entry(victim.unit, victim.attempts, exclusive=True))

    def _requeue(self, unit: WorkUnit, attempts: int, reason: str, *, exclusive: bool, retry: collections.deque) -> None:
        if attempts < self.cfg.replicas.max_attempts:
            self.progress.units_retried += 1
            retry.append(_Entry(unit, attempts, exclusive))
            return
        log.error("unit %s failed %d times: recording its prompts as failed (%s)", unit.shard_id, attempts, reason)
        failed = [FailedPrompt(prompt_id=p.prompt_id, reason=reason[:500], attempts=attempts) for p in unit.prompts]
        result = UnitResult(failed=failed, stats=ShardStats(prompts=len(unit.prompts), failed_prompts=len(failed)))
        self._on_commit(persist_unit(self.storage, unit, result, self.cfg.output))

    def _check_hung(self, replicas: list[_Replica], now: float) -> None:
        import ray

        for rep in list(replicas):
            if rep.inflight and now - rep.last_progress > self.cfg.replicas.unit_timeout_s:
                log.warning("%s made no progress for %.0f s: replacing it", rep.name, now - rep.last_progress)
                # Killing makes its in-flight refs fail with RayActorError; they are requeued as they surface.
                ray.kill(rep.handle)
                rep.last_progress = now

    _generation_s: float = 0.0  # first replica ready -> last shard committed (engine start excluded)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
