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
from potstill.pipelines.engines.protocol import EngineFailure
from potstill.pipelines.generate.pool import ReplicaLost, ReplicaPool, reason_of
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

    def run(self, pool: ReplicaPool) -> dict[str, Any]:
        if self.storage.remote:
            self.storage.check_conditional_create()
        claim_run(self.storage, self.cfg, self.run_id)
        plan, report = self._plan()
        committed = committed_shard_ids(self.storage)
        todo = [s for s in plan.shard_ids if s not in committed]
        self.progress.shards_skipped = len(plan.shard_ids) - len(todo)
        self.progress.prompts_done = sum(n for s, n in zip(plan.shard_ids, plan.shard_sizes) if s in committed)
        self.accounting = RunAccounting(self.cfg, self.storage, self.run_id, self.observer, clock=pool.now)
        if todo:
            self.progress.phase = "generating"
            try:
                self._generate(plan, set(todo), pool)
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
            planned = set(plan.shard_ids)
            commits = [c for s, c in read_commits(self.storage).items() if s in planned]
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
    def _generate(self, plan: RunPlan, todo: set[str], pool: ReplicaPool) -> None:
        self.pool = pool
        self._units_left = self._units(plan, todo)
        self._units_undrawn = len(todo)
        if not self._affordable():
            return
        self._start_first()
        started = time.perf_counter()
        while True:
            self._fill_pool()
            self._dispatch()
            if not self._owner:
                break
            self._ask_loads()
            # Start calls first: a replica's failed start is handled before its units' failures.
            ready = pool.wait(list(self._starting) + list(self._owner) + list(self._loads), timeout_s=1.0)
            for call in ready:
                self._on_ready(call)
            self._check_deadlines(pool.now())
            self._maybe_scale_up()
            self.accounting.tick(*self._pool_state())
            self.progress.spent_usd = self.accounting.spent_usd()
        self._generation_s = time.perf_counter() - started
        self.accounting.generation_s = self._generation_s
        for rep in self._replicas:
            stats = self._collect_requests(rep)
            pool.kill(rep)
            self.accounting.replica_ended(rep.name, stats)
        self._replicas.clear()

    def _start_first(self) -> None:
        """Start one replica and wait for its engine: a bad model or engine config fails the run here, before any
        work is queued, instead of being retried replica after replica."""
        first = self._add_replica()
        call = self._start_call_of(first)
        while not self.pool.wait([call], timeout_s=1.0):
            reason = missed_deadline(first, self.pool.now(), self.cfg.replicas)
            if reason is not None:
                self.pool.kill(first)
                raise RuntimeError(f"the first teacher replica's {reason}; check that the cluster has the resources "
                                   "a replica asks for (replicas.*, teacher.tensor_parallel_size) and that the engine "
                                   "can load the model, then re-run to resume")
        self._mark_ready(first, self.pool.result(call))

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

    def _add_replica(self) -> Replica:
        rep = self.pool.create()
        rep.created_at = self.pool.now()
        self.accounting.replica_added(rep.name, rep.gpus, rep.cpus)
        self._starting[self.pool.call(rep, "start")] = rep
        self._replicas.append(rep)
        return rep

    def _start_call_of(self, rep: Replica) -> Any:
        return next(call for call, r in self._starting.items() if r is rep)

    def _mark_ready(self, rep: Replica, info: dict[str, Any]) -> None:
        """`rep`'s engine started; `info` is what its `start()` returned."""
        self._starting = {call: r for call, r in self._starting.items() if r is not rep}
        rep.ready_at = self.pool.now()
        rep.min_sequences = min_sequences_for(self.cfg.replicas, info.get("batch_capacity"))
        self.accounting.replica_ready(rep.name)

    def _fill_pool(self) -> None:
        """Start replicas up to the target while work remains (a dead one is replaced here)."""
        while self._work_left() and len(self._replicas) < self.target_replicas:
            self._add_replica()
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
        if not self.accounting.may_dispatch(self._retry[0].unit):  # budget.max_usd: wait, or stop
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
                call = self.pool.call(rep, "generate" if entry.is_part else "process", entry.unit)
                rep.units_sent += 1
                rep.inflight[call] = self.pool.now()
                rep.exclusive = entry.exclusive
                self._owner[call] = (rep, entry)
                self.accounting.dispatched(call, entry.unit)

    def _ask_loads(self) -> None:
        """Ask each full replica to report back as soon as its engine runs fewer than its threshold of sequences."""
        rcfg = self.cfg.replicas
        if rcfg.min_sequences_in_flight is None or not self._work_left():
            return
        for rep in self._replicas:
            if (rep.min_sequences is not None and rep.load_ref is None and rep.hung_reason is None and not rep.exclusive
                    and rcfg.units_in_flight <= len(rep.inflight) < rcfg.max_units_in_flight):
                rep.load_ref = self.pool.call(rep, "load", rep.units_sent, rep.min_sequences, LOAD_WAIT_S)
                rep.load_units = rep.units_sent
                self._loads[rep.load_ref] = rep

    def _maybe_scale_up(self) -> None:
        rcfg = self.cfg.replicas
        if self.target_replicas < rcfg.max_replicas and self._work_left():
            if all(len(r.inflight) >= rcfg.units_in_flight for r in self._replicas):
                self.target_replicas += 1  # backlog with every replica full: scale up

    # -- results -----------------------------------------------------------------------------------
    def _on_ready(self, call: Any) -> None:
        if call in self._loads:
            rep = self._loads.pop(call)
            rep.load_ref = None
            try:
                pending = self.pool.result(call)
            except Exception:  # noqa: BLE001 - a dead replica shows up through its units' calls
                pending = None
            rep.sequences_pending = pending if rep.units_sent == rep.load_units else None
            return
        if call in self._starting:
            rep = self._starting[call]
            try:
                info = self.pool.result(call)
            except Exception as exc:  # noqa: BLE001 - any failure to start: replace it
                self._on_start_failure(rep, exc)
                return
            self._start_failures = 0
            self._mark_ready(rep, info)
            return
        if call not in self._owner:  # already requeued with its replica
            return
        rep, entry = self._owner.pop(call)
        self.accounting.settled(call)
        self._release(rep, call)
        try:
            out = self.pool.result(call)
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
        try:
            stats = self.pool.result(self.pool.call(rep, "stats"), timeout_s=10)
        except Exception:  # noqa: BLE001 - a dead replica's count is gone; nothing to add
            return None
        self.progress.engine_requests += stats["engine_requests"] - rep.requests_seen
        rep.requests_seen = stats["engine_requests"]
        return stats

    # -- supervision ---------------------------------------------------------------------------------
    def _started(self, rep: Replica) -> bool:
        """Whether `rep`'s engine has started (settling a start result the loop has not seen yet)."""
        call = next((c for c, x in self._starting.items() if x is rep), None)
        if call is None:
            return rep.ready_at is not None
        if not self.pool.wait([call], timeout_s=0):
            return False
        try:
            info = self.pool.result(call)
        except Exception:  # noqa: BLE001 - it did not start
            return False
        self._start_failures = 0
        self._mark_ready(rep, info)
        return True

    def _on_start_failure(self, rep: Replica, exc: Exception) -> None:
        """Replace a replica whose engine never started; its units never ran, so none is blamed."""
        reason = rep.hung_reason or redact(reason_of(exc))
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
        reason = rep.hung_reason if kind == "hung" else redact(reason_of(exc))
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
        calls = list(rep.inflight)
        rep.inflight.clear()
        rep.exclusive = False
        if not calls:
            return []
        done = set(self.pool.wait(calls, timeout_s=0))
        victims = []
        for call in calls:
            _, entry = self._owner.pop(call)
            self.accounting.settled(call)
            if call in done:
                try:
                    out = self.pool.result(call)
                except Exception:  # noqa: BLE001 - failed with its replica: a suspect like the rest
                    victims.append(entry)
                    continue
                self._on_success(entry, out, rep)
            else:
                victims.append(entry)
        return victims

    def _retire(self, rep: Replica, kind: str) -> None:
        if rep not in self._replicas:
            return
        stats = self._collect_requests(rep)
        self.pool.kill(rep)
        self.accounting.replica_ended(rep.name, stats)
        self._replicas.remove(rep)
        self._starting = {call: r for call, r in self._starting.items() if r is not rep}
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
        log.warning("%s %s: replacing it", rep.name, reason)
        rep.hung_reason = reason
        self.pool.kill(rep)  # its in-flight calls now fail with ReplicaLost and are requeued as they surface
        if not rep.inflight:
            self._retire(rep, "hung")

    _generation_s: float = 0.0  # first replica ready -> last shard committed (engine start excluded)


def _broken_kind(exc: BaseException, rep: Replica) -> str | None:
    """Why the replica must be replaced (`hung`, `actor_died`, `engine_failure`), or None if it is fine."""
    if rep.hung_reason is not None:
        return "hung"
    if isinstance(exc, ReplicaLost):
        return "actor_died"
    if isinstance(exc, EngineFailure):
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
