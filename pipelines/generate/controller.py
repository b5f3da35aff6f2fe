"""The generation controller: plans a run, feeds units to replicas, supervises, finalizes.

It runs inside the controller actor (`actors/controller_actor.py`). The loop keeps
`units_in_flight` units queued on every replica (backpressure: the data never
passes through here, and memory holds one unit per in-flight slot however
many prompts the run has). When a replica's engine runs low on sequences
(`min_sequences_in_flight`: its units are down to long-tail prompts) it gets
one more unit, up to `max_units_in_flight`, so the batch stays full the way
it would with every prompt submitted at once. It replaces a replica whose actor died, whose
engine broke (`EngineFailure`), whose engine did not start within
`start_timeout_s`, or that left a unit unfinished for `unit_timeout_s`, and
requeues that replica's units; `supervision.FailurePolicy` decides which
unit is blamed, when a unit is split so a poison prompt runs alone, and when
a prompt is recorded as failed. Sub-unit results are the one case where rows
pass through here: the controller commits their merged shard itself.
Cost, `budget.max_usd` and the pool's metrics go through `RunAccounting`
(`accounting.py`), called from the loop: every replica's life, every result
by the replica that produced it, and a budget check before each dispatch.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from potstill.pipelines.generate.accounting import RUN_REPORT, RunAccounting, RunObserver, summary_of
from potstill.pipelines.output.commit import committed_shard_ids, finalize_run, read_commits
from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts
from potstill.pipelines.models.assets import teacher_revision
from potstill.pipelines.generate.plan import RunPlan, iter_units, plan_run
from potstill.pipelines.observe.redact import redact
from potstill.pipelines.generate.replicas import Replica, min_sequences_for, missed_deadline, unit_limit
from potstill.pipelines.output.run_record import claim_run
from potstill.pipelines.output.shard_output import persist_unit
from potstill.pipelines.output.storage import Storage
from potstill.pipelines.generate.supervision import Entry, FailurePolicy, Split, Verdict
from potstill.pipelines.generate.unit_runner import UnitResult
from potstill.schemas.manifest import ShardCommit, ShardStats
from potstill.schemas.generation import GenerationConfig

__all__ = ["GenerationController", "Progress", "peak_rss_mb"]

log = logging.getLogger("potstill.controller")
LOAD_WAIT_S = 30.0  # longest a replica holds a load long poll before answering anyway


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
    replaced_for: dict[str, int] = field(default_factory=dict)  # actor_died / engine_failure / hung -> count
    units_retried: int = 0
    units_split: int = 0
    engine_requests: int = 0
    spent_usd: float = 0.0
    totals: ShardStats = field(default_factory=ShardStats)
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["totals"] = self.totals.model_dump()
        d["elapsed_s"] = time.time() - self.started_at
        return d


class GenerationController:
    """Plans, schedules, supervises and finalizes one generation run."""

    def __init__(self, cfg: GenerationConfig, out_uri: str, observer: RunObserver | None = None):
        self.cfg = cfg
        self.observer = observer  # the pool's live metrics (Prometheus gauges on Ray)
        self.run_id = cfg.resolved_run_id()
        self.out_uri = out_uri
        self.storage = Storage(out_uri, cfg.output.storage)
        self.progress = Progress(run_id=self.run_id)
        self.target_replicas = cfg.replicas.min_replicas
        self.policy = FailurePolicy(cfg.replicas.max_attempts, cfg.replicas.split_into)
        # The scheduling state of `_generate`.
        self._retry: collections.deque[Entry] = collections.deque()
        self._owner: dict[Any, tuple[Replica, Entry]] = {}
        self._replicas: list[Replica] = []
        self._starting: dict[Any, Replica] = {}  # start() refs of replicas whose engine is loading
        self._loads: dict[Any, Replica] = {}  # load() refs: how many sequences a replica's engine still has
        self._start_failures = 0  # in a row; the run stops at max_attempts
        self._exhausted = False
        self._units_undrawn = 0  # units of the plan not yet taken from the source (the queue's depth, with _retry)
        self.accounting: RunAccounting | None = None

    # -- public, called through the actor -------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return self.progress.as_dict()

    def scale(self, replicas: int) -> int:
        """Set the replica target (clamped to min..max); applied by the loop."""
        r = self.cfg.replicas
        self.target_replicas = max(r.min_replicas, min(r.max_replicas, replicas))
        return self.target_replicas

    def run(self, factory: Any) -> dict[str, Any]:
        if self.storage.remote:
            self.storage.check_conditional_create()
        claim_run(self.storage, self.cfg, self.run_id)
        plan, report = self._plan()
        committed = committed_shard_ids(self.storage)
        todo = [s for s in plan.shard_ids if s not in committed]
        self.progress.shards_skipped = len(plan.shard_ids) - len(todo)
        self.progress.prompts_done = sum(n for s, n in zip(plan.shard_ids, plan.shard_sizes) if s in committed)
        self.accounting = RunAccounting(self.cfg, self.storage, self.run_id, self.observer)
        if todo:
            self.progress.phase = "generating"
            try:
                self._generate(plan, set(todo), factory)
            except BaseException:
                self.accounting.finish("failed")  # its spend counts against the next invocation's budget
                raise
        status = "budget_exhausted" if self.accounting.budget_stopped else "complete"
        if status == "complete":
            self.progress.phase = "finalizing"
            teacher = self.cfg.teacher
            revision = teacher_revision(teacher.model, teacher.revision)
            manifest = finalize_run(self.storage, self.run_id, self.cfg.fingerprint(), teacher.model, revision,
                                    plan.shard_ids)
            shards, totals, failed = len(manifest.shards), manifest.totals, len(manifest.failed)
        else:  # stopped at the budget: what is committed stays, unfinalized, for a resume with a larger budget
            commits = [c for s, c in read_commits(self.storage).items() if s in set(plan.shard_ids)]
            shards, totals = len(commits), sum((c.stats for c in commits), ShardStats())
            failed = sum(len(c.failed) for c in commits)
        run_report = self.accounting.finish(status)
        self.progress.spent_usd = run_report.spent_usd
        self.progress.phase = "done" if status == "complete" else "stopped"
        p = self.progress
        return {
            "run_id": self.run_id, "out": self.out_uri, "status": status, "shards": shards,
            "shards_skipped": p.shards_skipped, "totals": totals.model_dump(),
            "this_run": p.totals.model_dump(),
            "failed_prompts": failed, "ingest": report.counts(),
            "engine_requests": p.engine_requests,
            "replicas_replaced": p.replicas_replaced, "replaced_for": dict(p.replaced_for),
            "units_retried": p.units_retried, "units_split": p.units_split,
            "elapsed_s": time.time() - p.started_at,
            "generation_s": self._generation_s,
            "controller_peak_rss_mb": peak_rss_mb(),
            "cost": summary_of(run_report), "report": self.storage.uri_of(RUN_REPORT),
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

    # -- scheduling ------------------------------------------------------------------------------
    def _generate(self, plan: RunPlan, todo: set[str], factory: Any) -> None:
        import ray

        self._units_left = self._units(plan, todo)
        self._units_undrawn = len(todo)
        if not self._affordable():
            return
        first = self._add_replica(factory)
        info = ray.get(self._start_ref_of(first))  # surfaces a bad model/config before any work is queued
        self._mark_ready(first, info)
        started = time.perf_counter()
        while True:
            self._fill_pool(factory)
            self._dispatch()
            if not self._owner:
                break
            self._ask_loads()
            # Start refs first: a replica's failed start is handled before its units' failures.
            ready, _ = ray.wait(list(self._starting) + list(self._owner) + list(self._loads), num_returns=1, timeout=1.0)
            for ref in ready:
                self._on_ready(ref)
            self._check_deadlines(time.monotonic())
            self._maybe_scale_up()
            self.accounting.tick(*self._pool_state())
            self.progress.spent_usd = self.accounting.spent_usd()
        self._generation_s = time.perf_counter() - started
        self.accounting.generation_s = self._generation_s
        for rep in self._replicas:
            stats = self._collect_requests(rep)
            ray.kill(rep.handle)
            self.accounting.replica_ended(rep.name, stats)
        self._replicas.clear()

    def _work_left(self) -> bool:
        """Units remain to dispatch (and the budget still admits them)."""
        return bool(self._retry or not self._exhausted) and not self.accounting.budget_stopped

    def _affordable(self) -> bool:
        """Whether the budget admits the first unit (else no replica is started at all)."""
        entry = self._next_entry(busy=False)
        if entry is not None:
            self._retry.appendleft(entry)
        return entry is not None

    def _pool_state(self) -> tuple[int, int, int]:
        """(live replicas, pending replicas, units queued) for the metrics."""
        live = sum(r.ready_at is not None for r in self._replicas)
        return live, len(self._replicas) - live, len(self._retry) + self._units_undrawn

    def _add_replica(self, factory: Any) -> Replica:
        rep = factory.create()
        self.accounting.replica_added(rep.name, rep.gpus, rep.cpus)
        self._starting[rep.handle.start.remote()] = rep
        self._replicas.append(rep)
        return rep

    def _start_ref_of(self, rep: Replica) -> Any:
        return next(ref for ref, r in self._starting.items() if r is rep)

    def _mark_ready(self, rep: Replica, info: dict[str, Any]) -> None:
        """`rep`'s engine started; `info` is what its `start()` returned."""
        self._starting = {ref: r for ref, r in self._starting.items() if r is not rep}
        rep.ready_at = time.monotonic()
        rep.min_sequences = min_sequences_for(self.cfg.replicas, info.get("batch_capacity"))
        self.accounting.replica_ready(rep.name)

    def _fill_pool(self, factory: Any) -> None:
        """Start replicas up to the target while work remains (a dead one is replaced here)."""
        while self._work_left() and len(self._replicas) < self.target_replicas:
            self._add_replica(factory)
        self.progress.replicas = len(self._replicas)

    def _next_entry(self, busy: bool) -> Entry | None:
        """The next entry for a replica (`busy`: it has work in flight, so an exclusive entry must wait)."""
        if not self._retry and not self._exhausted:
            unit = next(self._units_left, None)
            if unit is None:
                self._exhausted = True
            else:
                self._units_undrawn -= 1
                self._retry.append(Entry(unit))
        if not self._retry or (self._retry[0].exclusive and busy):
            return None
        if not self.accounting.may_dispatch(self._retry[0].unit):  # budget.max_usd: nothing more goes out
            return None
        return self._retry.popleft()

    def _dispatch(self) -> None:
        base = self.cfg.replicas.units_in_flight
        for rep in self._replicas:
            while len(rep.inflight) < unit_limit(rep, self.cfg.replicas) and not rep.exclusive and rep.hung_reason is None:
                entry = self._next_entry(busy=bool(rep.inflight))
                if entry is None:
                    break
                if len(rep.inflight) >= base:
                    rep.sequences_pending = None  # one extra unit per load report
                method = rep.handle.generate if entry.is_part else rep.handle.process
                ref = method.remote(entry.unit)
                rep.units_sent += 1
                rep.inflight[ref] = time.monotonic()
                rep.exclusive = entry.exclusive
                self._owner[ref] = (rep, entry)
                self.accounting.dispatched(ref, entry.unit)

    def _ask_loads(self) -> None:
        """Ask each full replica to report back as soon as its engine runs fewer than its threshold of sequences."""
        rcfg = self.cfg.replicas
        if rcfg.min_sequences_in_flight is None or not self._work_left():
            return
        for rep in self._replicas:
            if (rep.min_sequences is not None and rep.load_ref is None and rep.hung_reason is None and not rep.exclusive
                    and rcfg.units_in_flight <= len(rep.inflight) < rcfg.max_units_in_flight):
                rep.load_ref = rep.handle.load.remote(rep.units_sent, rep.min_sequences, LOAD_WAIT_S)
                rep.load_units = rep.units_sent
                self._loads[rep.load_ref] = rep

    def _maybe_scale_up(self) -> None:
        rcfg = self.cfg.replicas
        if self.target_replicas < rcfg.max_replicas and self._work_left():
            if all(len(r.inflight) >= rcfg.units_in_flight for r in self._replicas):
                self.target_replicas += 1  # backlog with every replica full: scale up

    # -- results -----------------------------------------------------------------------------------
    def _on_ready(self, ref: Any) -> None:
        import ray

        if ref in self._loads:
            rep = self._loads.pop(ref)
            rep.load_ref = None
            try:
                pending = ray.get(ref)
            except Exception:  # noqa: BLE001 - a dead replica shows up through its units' refs
                pending = None
            rep.sequences_pending = pending if rep.units_sent == rep.load_units else None
            return
        if ref in self._starting:
            rep = self._starting[ref]
            try:
                info = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - any failure to start: replace it
                self._on_start_failure(rep, exc)
                return
            self._start_failures = 0
            self._mark_ready(rep, info)
            return
        if ref not in self._owner:  # already requeued with its replica
            return
        rep, entry = self._owner.pop(ref)
        self.accounting.settled(ref)
        self._release(rep, ref)
        try:
            out = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - every failure kind is handled below
            self._on_failure(exc, rep, entry)
            return
        self._on_success(entry, out, rep)

    def _release(self, rep: Replica, ref: Any) -> None:
        rep.inflight.pop(ref, None)
        rep.exclusive = False

    def _on_success(self, entry: Entry, out: ShardCommit | UnitResult, rep: Replica) -> None:
        self.accounting.credit(rep.name, out.stats)  # the samples `rep` produced (a commit's, or a sub-unit's)
        if entry.split is not None:
            self._add_part(entry.split, out)
        else:
            self._on_commit(out)

    def _add_part(self, split: Split, result: UnitResult) -> None:
        merged = split.add(result)
        if merged is not None:  # the last sub-unit: commit the shard here (the rare path)
            self._on_commit(persist_unit(self.storage, split.unit, merged, self.cfg.output))

    def _on_commit(self, commit: ShardCommit) -> None:
        p = self.progress
        p.shards_done += 1
        p.prompts_done += commit.stats.prompts
        p.totals = p.totals + commit.stats

    def _collect_requests(self, rep: Replica) -> dict[str, Any] | None:
        """Add `rep`'s engine requests to the run's count; its `stats()` (None if it is dead)."""
        import ray

        try:
            stats = ray.get(rep.handle.stats.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - a dead replica's count is gone; nothing to add
            return None
        self.progress.engine_requests += stats["engine_requests"] - rep.requests_seen
        rep.requests_seen = stats["engine_requests"]
        return stats

    # -- supervision ---------------------------------------------------------------------------------
    def _started(self, rep: Replica) -> bool:
        """Whether `rep`'s engine has started (settling a start result the loop has not seen yet)."""
        import ray

        ref = next((r for r, x in self._starting.items() if x is rep), None)
        if ref is None:
            return rep.ready_at is not None
        done, _ = ray.wait([ref], timeout=0)
        if not done:
            return False
        try:
            info = ray.get(ref)
        except Exception:  # noqa: BLE001 - it did not start
            return False
        self._start_failures = 0
        self._mark_ready(rep, info)
        return True

    def _on_start_failure(self, rep: Replica, exc: Exception) -> None:
        """Replace a replica whose engine never started; its units never ran, so none is blamed."""
        reason = rep.hung_reason or redact(_reason(exc))
        self._start_failures += 1
        if self._start_failures >= self.cfg.replicas.max_attempts:
            raise RuntimeError(f"replicas: {self._start_failures} replicas in a row failed to start (last: {reason}); "
                               f"fix the engine config or the cluster, then re-run with the same run id to resume") from exc
        log.warning("%s failed to start: %s; replacing it", rep.name, reason)
        waiting = self._drain(rep)
        self._retire(rep, "hung" if rep.hung_reason else "start_failed")
        self._retry.extendleft(reversed(waiting))

    def _on_failure(self, exc: Exception, rep: Replica, entry: Entry) -> None:
        """Blame and requeue after a failed unit; replace its replica if the replica is dead or broken."""
        kind = _broken_kind(exc, rep)
        reason = rep.hung_reason if kind == "hung" else redact(_reason(exc))
        log.warning("unit %s (%d prompts) failed on %s: %s", entry.unit.shard_id, len(entry.unit.prompts), rep.name, reason)
        if kind is None:  # the unit's own task raised: the replica is fine
            self._apply(entry, self.policy.on_failure(entry, reason, broken=False, alone=True))
            return
        if rep.ready_at is None and not self._started(rep):  # it broke before its engine started: nothing ran
            self._retry.appendleft(entry)
            self._on_start_failure(rep, exc)
            return
        victims = [entry] + self._drain(rep)
        self._retire(rep, kind)
        for victim in victims:
            # Alone on the engine (by rule or because nothing else was in flight): the failure is its own.
            alone = victim.exclusive or len(victims) == 1
            self._apply(victim, self.policy.on_failure(victim, reason, broken=True, alone=alone))

    def _drain(self, rep: Replica) -> list[Entry]:
        """Settle a dying replica's other in-flight units: finished ones count, the rest are returned."""
        import ray

        refs = list(rep.inflight)
        rep.inflight.clear()
        rep.exclusive = False
        if not refs:
            return []
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        victims = []
        for ref in refs:
            _, entry = self._owner.pop(ref)
            self.accounting.settled(ref)
            if ref in done:
                try:
                    out = ray.get(ref)
                except Exception:  # noqa: BLE001 - failed with its replica: a suspect like the rest
                    victims.append(entry)
                    continue
                self._on_success(entry, out, rep)
            else:
                victims.append(entry)
        return victims

    def _retire(self, rep: Replica, kind: str) -> None:
        import ray

        if rep not in self._replicas:
            return
        stats = self._collect_requests(rep)
        ray.kill(rep.handle)
        self.accounting.replica_ended(rep.name, stats)
        self._replicas.remove(rep)
        self._starting = {ref: r for ref, r in self._starting.items() if r is not rep}
        self.progress.replicas_replaced += 1
        self.progress.replaced_for[kind] = self.progress.replaced_for.get(kind, 0) + 1

    def _apply(self, entry: Entry, verdict: Verdict) -> None:
        if verdict.split:
            self.progress.units_split += 1
            log.warning("unit %s failed alone: re-running its %d prompts as %d sub-units", entry.unit.shard_id,
                        len(entry.unit.prompts), len(verdict.requeue))
        if verdict.requeue:
            self.progress.units_retried += 1
            self._retry.extend(verdict.requeue)
        if verdict.gave_up is not None:
            failed = verdict.gave_up.failed
            log.error("shard %s: recording %d prompt(s) as failed after %d attempts (%s)", entry.unit.shard_id,
                      len(failed), failed[0].attempts, failed[0].reason)
            if entry.split is not None:
                self._add_part(entry.split, verdict.gave_up)
            else:
                self._on_commit(persist_unit(self.storage, entry.unit, verdict.gave_up, self.cfg.output))

    def _check_deadlines(self, now: float) -> None:
        """Kill a replica whose engine did not start in time, or that left a unit unfinished too long."""
        for rep in list(self._replicas):
            if rep.hung_reason is None:
                reason = missed_deadline(rep, now, self.cfg.replicas)
                if reason is not None:
                    self._kill_hung(rep, reason)

    def _kill_hung(self, rep: Replica, reason: str) -> None:
        import ray

        log.warning("%s %s: replacing it", rep.name, reason)
        rep.hung_reason = reason
        ray.kill(rep.handle)  # its in-flight refs now fail with RayActorError and are requeued as they surface
        if not rep.inflight:
            self._retire(rep, "hung")

    _generation_s: float = 0.0  # first replica ready -> last shard committed (engine start excluded)


def _reason(exc: BaseException) -> str:
    """`Type: first line` of the error behind `exc` (a Ray task error's cause, not its traceback)."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0] if text else ''}"


def _broken_kind(exc: BaseException, rep: Replica) -> str | None:
    """Why the replica must be replaced (`hung`, `actor_died`, `engine_failure`), or None if it is fine."""
    import ray

    from potstill.pipelines.engines.protocol import EngineFailure

    if rep.hung_reason is not None:
        return "hung"
    if isinstance(exc, ray.exceptions.RayActorError):
        return "actor_died"
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, EngineFailure):
        return "engine_failure"
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux: `VmHWM` of this process's own memory. `ru_maxrss` would also count
    the parent's pages a forked child carried until its exec, so a small
    driver started from a large process would report the parent's size.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
