"""The generation controller: plans a run, sizes the replica pool, feeds units to replicas, supervises, finalizes.

    summary = GenerationController(cfg, out_uri).run(pool)     # pool: RayReplicaPool, or SimulatedPool in tests

It runs inside the run's named controller actor (`actors/controller_actor.py`),
which answers `status()` and `scale()` while `run()` works. The loop keeps
`units_in_flight` units queued on every *ready* replica (an engine that is
still loading gets none: its units would wait while others idle), one more
(up to `max_units_in_flight`) when a replica's engine runs low on sequences
(`min_sequences_in_flight`), so the data never passes through here and memory
holds one unit per in-flight slot however many prompts the run has.

The pool's size follows `scale()` (a fixed count, or min/max bounds) and the
backlog policy (`autoscale.py`). Replicas that cannot be placed are pending,
not failures: the run works on with what it has, `status()` says what they
wait for, and on an autoscaling cluster their bundles are requested. A
scale-down drains: the replica gets no new unit, its in-flight units commit,
then it is removed. A node that drains (spot preemption) gets no new unit;
units still running near its deadline are requeued elsewhere, unblamed, and
replacements start on other nodes.

It replaces a replica whose actor died, whose engine broke (`EngineFailure`),
whose engine did not start within `start_timeout_s` of its placement, or that
left a unit unfinished for `unit_timeout_s`, and requeues that replica's
units; `supervision.FailurePolicy` decides which unit is blamed, when a unit
is split so a poison prompt runs alone, and when a prompt is recorded as
failed. A lost node, a drain deadline or a hang of a unit that merely ran
alone never blames a prompt. Sub-unit results are the one case where rows
pass through here: the controller commits their merged shard itself.
Cost, `budget.max_usd` and the pool's metrics go through `RunAccounting`
(`accounting.py`), called from the loop: every replica's life, every result
by the replica that produced it, and a budget check before each dispatch.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from potstill.pipelines.engines.protocol import EngineFailure
from potstill.pipelines.generate.accounting import RUN_REPORT, RunAccounting, RunObserver
from potstill.pipelines.generate.accounting import summary_of as cost_summary_of
from potstill.pipelines.generate.autoscale import Autoscaler, PoolView, clamp, drain_order
from potstill.pipelines.generate.plan import RunPlan, iter_units, plan_run
from potstill.pipelines.generate.pool import ReplicaLost, ReplicaPool, reason_of
from potstill.pipelines.generate.pool_history import PoolHistory
from potstill.pipelines.generate.replicas import Replica, min_sequences_for, missed_deadline, unit_limit
from potstill.pipelines.generate.run_lease import RunLease
from potstill.pipelines.generate.run_status import (
    Progress, replica_info, status_of, summary_of, tokens_per_prompt, tokens_per_s_per_replica,
)
from potstill.pipelines.generate.supervision import Entry, FailurePolicy, Split, Verdict
from potstill.pipelines.generate.unit_runner import UnitResult
from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts
from potstill.pipelines.observe.redact import redact
from potstill.pipelines.output.commit import committed_shard_ids, finalize_run, read_commits
from potstill.pipelines.output.run_record import open_run
from potstill.pipelines.output.scaling_record import ScalingRecorder
from potstill.pipelines.output.shard_output import persist_unit
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import GenerationConfig
from potstill.schemas.manifest import ShardCommit, ShardStats
from potstill.schemas.results import GenerationStatus, GenerationSummary, ReplicaInfo, ScaleBounds, ScaleResult

__all__ = ["GenerationController", "Progress", "peak_rss_mb"]

log = logging.getLogger("potstill.controller")
LOAD_WAIT_S = 30.0  # longest a replica holds a load long poll before answering anyway
DEADLINE_CHECKS = 30  # deadlines are checked this many times per (shortest) timeout, and at least once a second


class _Waiting:
    """The calls the loop waits on (starts, units, load polls) as one read-only collection, without copying."""

    def __init__(self, *parts: dict):
        self.parts = parts

    def __iter__(self) -> Iterator[Any]:
        for part in self.parts:
            yield from part

    def __contains__(self, call: Any) -> bool:
        return any(call in part for part in self.parts)

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)


class GenerationController:
    """Plans, schedules, scales, supervises and finalizes one generation run."""

    lease_beat_s = 5.0  # the run lease's heartbeat (run_lease.py); a crashed controller holds the run 2 beats

    def __init__(self, cfg: GenerationConfig, out_uri: str, observer: RunObserver | None = None):
        self.cfg = cfg
        self.observer = observer  # the pool's live metrics (Prometheus gauges on Ray)
        self.run_id = cfg.resolved_run_id()
        self.out_uri = out_uri
        self.storage = Storage(out_uri, cfg.output.storage)
        self.progress = Progress(run_id=self.run_id)
        rcfg = cfg.replicas
        self.bounds = ScaleBounds(min_replicas=rcfg.min_replicas, max_replicas=rcfg.max_replicas)
        self.target_replicas = rcfg.min_replicas
        self.scale_reason = "replicas.min_replicas"
        self.autoscaler = Autoscaler(rcfg.autoscale)
        self.policy = FailurePolicy(rcfg.max_attempts, rcfg.split_into)
        self.pool: ReplicaPool | None = None
        self._lock = threading.RLock()  # the loop holds it except while waiting; status() and scale() take it
        # The scheduling state of `_generate`.
        self._retry: collections.deque[Entry] = collections.deque()
        self._owner: dict[Any, tuple[Replica, Entry]] = {}
        self._replicas: list[Replica] = []
        self._room: dict[Replica, None] = {}  # ready replicas that may take another unit (insertion-ordered set)
        self._starting: dict[Any, Replica] = {}  # start() calls of replicas whose engine is loading
        self._loads: dict[Any, Replica] = {}  # load() calls: how many sequences a replica's engine still has
        self._waiting = _Waiting(self._starting, self._owner, self._loads)
        self._units_left: Iterator | None = None
        self._exhausted = False
        self._start_failures = 0  # in a row
        self._backoff_steps = 0
        self._backoff_until: float | None = None
        self._backoff_reason: str | None = None
        self._stalled_since: float | None = None  # since when no replica is ready or starting
        self._next_poll = 0.0
        self._next_deadline_check = 0.0
        self._deadline_check_s = max(1.0, min(rcfg.unit_timeout_s, rcfg.start_timeout_s) / DEADLINE_CHECKS)
        self._draining: set[Replica] = set()  # replicas marked draining (the pool's size counts the others)
        self._requested = 0  # replicas' worth of bundles asked of the autoscaler
        self._prompts_left = 0  # planned prompts not yet committed
        self._shards_left = 0
        self._inflight_prompts = 0
        self._ready_s_retired = 0.0  # engine-up seconds of retired replicas (tokens/s per replica)
        self._tokens_retired = 0
        self._first_ready: float | None = None
        self._generation_s = 0.0
        self._finish_at: float | None = None  # finish_by on the pool clock
        self._lease: RunLease | None = None
        self.history: PoolHistory | None = None
        self._recorder: ScalingRecorder | None = None
        self._retired: list[ReplicaInfo] = []  # every replica that left, as it left (the summary lists them)
        self._units_undrawn = 0  # units of the plan not yet taken from the source (the queue's depth, with _retry)
        self.accounting: RunAccounting | None = None

    # -- public, called through the actor -------------------------------------------------
    def status(self) -> GenerationStatus:
        """The run's state now (safe to call from another thread while `run` works)."""
        with self._lock:
            return status_of(self)

    def scale(self, replicas: int | None = None, min_replicas: int | None = None,
              max_replicas: int | None = None) -> ScaleResult:
        """Fix the replica count (`replicas`), or autoscale within new bounds (`min_replicas`/`max_replicas`).

        Applied by the loop within a second: more replicas start; surplus
        ones drain (their in-flight units commit first).
        """
        with self._lock:
            b = self.bounds
            if replicas is not None:
                if min_replicas is not None or max_replicas is not None:
                    raise ValueError("scale: pass --replicas N (a fixed count) or --min/--max (autoscaling bounds), not both")
                if replicas < 1:
                    raise ValueError(f"scale: replicas={replicas} must be at least 1")
                new = ScaleBounds(min_replicas=min(b.min_replicas, replicas), max_replicas=max(b.max_replicas, replicas),
                                  fixed=replicas)
                reason = f"potstill scale --replicas {replicas}"
            else:
                lo = b.min_replicas if min_replicas is None else min_replicas
                hi = b.max_replicas if max_replicas is None else max_replicas
                if lo < 1 or hi < lo:
                    raise ValueError(f"scale: min={lo} max={hi}: need 1 <= min <= max")
                new = ScaleBounds(min_replicas=lo, max_replicas=hi)
                reason = f"potstill scale --min {lo} --max {hi}"
            self.bounds = new
            self._set_target(clamp(self.target_replicas, new), reason)
            self.autoscaler.last_up = self.autoscaler.last_change = None  # an explicit command is not cooled down
            return ScaleResult(run_id=self.run_id, bounds=new, target=self.target_replicas, replicas=len(self._replicas))

    def run(self, pool: ReplicaPool, *, finalize: bool = True) -> GenerationSummary:
        """Plan, generate and (unless `finalize=False`, for benchmarks) finalize; returns the summary."""
        self.pool = pool
        self.history = PoolHistory(pool.now())
        try:
            return self._run(pool, finalize)
        except BaseException as exc:
            self.progress.phase, self.progress.error = "failed", redact(f"{type(exc).__name__}: {exc}")[:2000]
            raise
        finally:
            try:
                self._stop_requests()
            finally:
                if self._lease is not None:
                    self._lease.release()

    def _run(self, pool: ReplicaPool, finalize: bool) -> GenerationSummary:
        if self.storage.remote:
            self.storage.check_conditional_create()
        plan, report = self._plan()
        self.record = open_run(self.storage, self.cfg, self.run_id, plan)  # pins plan and teacher (hashed once per run)
        self._lease = RunLease(self.storage, self.run_id, f"controller potstill-{self.run_id} on {pool.location()}",
                               beat_s=self.lease_beat_s)
        self._lease.acquire()
        self._recorder = ScalingRecorder(self.storage, self._lease.token)
        report.write(self.storage)
        committed = committed_shard_ids(self.storage)
        todo = [s for s in plan.shard_ids if s not in committed]
        p = self.progress
        p.shards_skipped = len(plan.shard_ids) - len(todo)
        p.prompts_done = sum(n for s, n in zip(plan.shard_ids, plan.shard_sizes) if s in committed)
        self._prompts_left = p.prompts_total - p.prompts_done
        self._shards_left = len(todo)
        self.accounting = RunAccounting(self.cfg, self.storage, self.run_id, self.observer, clock=pool.now)
        if todo:
            p.phase = "generating"
            try:
                self._generate(plan, set(todo), pool)
            except BaseException:
                self.accounting.finish("failed")  # its spend counts against the next invocation's budget
                raise
        self._recorder.save(self.history.samples, final=True)
        status = "budget_exhausted" if self.accounting.budget_stopped else "complete"
        manifest = None
        if status == "complete" and finalize:
            p.phase = "finalizing"
            manifest = finalize_run(self.storage, self.run_id, self.cfg.fingerprint(), self.cfg.teacher.model,
                                    self.record.teacher_revision, plan.shard_ids, plan_hash=plan.plan_hash,
                                    scaling=self._recorder.attempts())
        run_report = self.accounting.finish(status)
        p.spent_usd = run_report.spent_usd
        p.phase = "stopped" if status == "budget_exhausted" else "done"
        summary = summary_of(self, manifest, report, peak_rss_mb())
        if status == "budget_exhausted":  # what is committed stays, unfinalized, for a resume with a larger budget
            planned = set(plan.shard_ids)
            commits = [c for s, c in read_commits(self.storage).items() if s in planned]
            summary.shards = len(commits)
            summary.totals = sum((c.stats for c in commits), ShardStats())
            summary.failed_prompts = sum(len(c.failed) for c in commits)
        summary.status = status
        summary.cost = cost_summary_of(run_report)
        summary.report = self.storage.uri_of(RUN_REPORT)
        return summary

    # -- planning ----------------------------------------------------------------------------
    def _plan(self) -> tuple[RunPlan, IngestReport]:
        report = IngestReport()
        plan = plan_run(iter_prompts(self.cfg.prompts, self.cfg.output.storage, report), self.run_id,
                        self.cfg.output.prompts_per_shard)
        if not plan.shard_ids:
            raise ValueError(f"prompts: no valid prompt in the source; nothing was written to {self.out_uri}\n{report.summary()}")
        self.progress.prompts_total = plan.total_prompts
        self.progress.shards_total = len(plan.shard_ids)
        return plan, report

    def _units(self, plan: RunPlan, todo: set[str]):
        """Second pass over the source: the units still to do, checked against the plan."""
        units = iter_units(iter_prompts(self.cfg.prompts, self.cfg.output.storage, IngestReport()), self.run_id,
                           self.cfg.output.prompts_per_shard, plan.plan_hash)
        for expected, unit in zip(plan.shard_ids, units):
            if unit.shard_id != expected:
                raise RuntimeError(f"prompts.path changed while the run was planned (shard {unit.index} is "
                                   f"{unit.shard_id}, planned {expected}); re-run to plan again")
            if unit.shard_id in todo:
                yield unit

    # -- scheduling ------------------------------------------------------------------------------
    def _generate(self, plan: RunPlan, todo: set[str], pool: ReplicaPool) -> None:
        self._units_left = self._units(plan, todo)
        self._units_undrawn = len(todo)
        finish_by = self.cfg.replicas.autoscale.finish_by
        if finish_by is not None:
            self._finish_at = pool.now() + (finish_by - datetime.now(timezone.utc)).total_seconds()
        self._stalled_since = pool.now()
        self._lock.acquire()
        try:
            while True:
                now = pool.now()
                if now >= self._next_poll:
                    self._poll(now)
                self._fill_pool(now)
                self._dispatch()
                if not self._owner and (not self._has_work() or self.accounting.budget_stopped):
                    break
                self.history.sample(now, self.target_replicas, self._replicas)
                self._recorder.save(self.history.samples)
                self._lease.beat()
                # The gauges show the pool as it stands while the loop waits: set after a result settles instead,
                # they would never count a unit that finishes within one wait.
                self.accounting.tick(*self._pool_state())
                self._lock.release()  # status() and scale() run while the loop waits
                try:
                    ready = pool.wait(self._waiting, timeout_s=1.0)
                finally:
                    self._lock.acquire()
                for call in ready:
                    self._on_ready(call)
                now = pool.now()
                if now >= self._next_deadline_check:
                    self._next_deadline_check = now + self._deadline_check_s
                    self._check_deadlines(now)
                self.progress.spent_usd = self.accounting.spent_usd()
            self.accounting.tick(*self._pool_state())
            if self._first_ready is not None:
                self._generation_s = pool.now() - self._first_ready
            self.accounting.generation_s = self._generation_s
            for rep in list(self._replicas):
                stats = self._collect_requests(rep)
                pool.retire(rep)
                self.accounting.replica_ended(rep.name, stats)
                self._retired.append(replica_info(rep, pool.now(), retired="run finished"))
            self._replicas.clear()
            self._room.clear()
            self.history.note("run finished")
            self.history.sample(pool.now(), 0, [], force=True)
        finally:
            self._lock.release()

    def _has_work(self) -> bool:
        """Units wait to be dispatched (reading the next unit of the plan if the queue is empty)."""
        if not self._retry and not self._exhausted:
            unit = next(self._units_left, None)
            if unit is None:
                self._exhausted = True
            else:
                self._units_undrawn -= 1
                self._retry.append(Entry(unit))
        return bool(self._retry)

    def _pool_state(self) -> tuple[int, int, int]:
        """(live replicas, pending replicas, units queued) for the metrics."""
        live = sum(r.ready_at is not None for r in self._replicas)
        return live, len(self._replicas) - live, len(self._retry) + self._units_undrawn

    def _set_target(self, target: int, reason: str) -> None:
        if target != self.target_replicas:
            log.info("replicas: target %d -> %d (%s)", self.target_replicas, target, reason)
            if self.history is not None:
                self.history.note(f"target {self.target_replicas}->{target}: {reason}")
        self.target_replicas, self.scale_reason = target, reason

    def _add_replica(self) -> Replica:
        rep = self.pool.create()
        rep.created_at = self.pool.now()
        self.accounting.replica_added(rep.name, rep.gpus, rep.cpus)
        self._starting[self.pool.call(rep, "start")] = rep
        self._replicas.append(rep)
        self.history.note("")
        return rep

    def _mark_ready(self, rep: Replica, info: dict[str, Any]) -> None:
        """`rep`'s engine started; `info` is what its `start()` returned."""
        now = self.pool.now()
        _drop(self._starting, rep)
        if rep.placed_at is None:
            rep.placed_at = now
        rep.node_id = info.get("node_id") or rep.node_id
        rep.waiting_for = None
        rep.ready_at = rep.idle_since = now
        rep.min_sequences = min_sequences_for(self.cfg.replicas, info.get("batch_capacity"))
        self._start_failures = 0
        self._backoff_steps = 0
        self._stalled_since = None
        if self._first_ready is None:
            self._first_ready = now
        self.accounting.replica_ready(rep.name)
        if rep.draining is None:
            self._room[rep] = None
        self.history.note("")

    def _fill_pool(self, now: float) -> None:
        """Start replicas up to the target while work remains (a dead one is replaced here); drain any surplus."""
        if not self._draining and len(self._replicas) == self.target_replicas:
            return  # the common case, every loop: nothing to do (and nothing to scan over a thousand replicas)
        active = [r for r in self._replicas if r.draining is None]
        if len(active) > self.target_replicas:
            self._scale_down(active, len(active) - self.target_replicas)
            return
        if self.accounting.budget_stopped or not (self._owner or self._has_work()):
            return
        if not self._replicas and not self._owner and not self.accounting.may_dispatch(self._retry[0].unit):
            return  # budget.max_usd admits no unit: start no replica at all (nothing in flight: the stop is final)
        missing = self.target_replicas - len(active)
        for rep in self._replicas:  # a replica draining for a scale-down comes back before a new one starts
            if missing and rep.draining in ("scale-down", "idle") and rep.ready_at is not None:
                rep.draining = None
                self._draining.discard(rep)
                rep.idle_since = now if not rep.inflight else None
                self._room[rep] = None
                self.history.note("drain cancelled")
                missing -= 1
        if missing and self._backoff_until is not None and now < self._backoff_until:
            return
        for _ in range(missing):
            self._add_replica()

    def _scale_down(self, active: list[Replica], excess: int) -> None:
        why = "idle" if self.scale_reason.startswith("idle") else "scale-down"
        for rep in drain_order(active)[:excess]:
            if rep.ready_at is None:  # pending or starting: nothing in flight, nothing to wait for
                self._retire(rep, "drained")
                continue
            rep.draining = why
            self._draining.add(rep)
            self._room.pop(rep, None)
            self.history.note(f"{rep.name} drains ({why})")
            if not rep.inflight:
                self._retire(rep, "drained")

    def _next_entry(self, busy: bool) -> Entry | None:
        """The next entry for a replica (`busy`: it has work in flight, so an exclusive entry must wait)."""
        if not self._has_work() or (self._retry[0].exclusive and busy):
            return None
        if not self.accounting.may_dispatch(self._retry[0].unit):  # budget.max_usd: wait, or stop
            return None
        return self._retry.popleft()

    def _dispatch(self) -> None:
        """Queue units on ready replicas with room (only those: an engine still loading would hold them idle)."""
        if not self._room or not self._has_work():
            return
        rcfg = self.cfg.replicas
        for rep in list(self._room):
            while True:
                if rep.exclusive or rep.hung_reason is not None or rep.draining is not None:
                    self._room.pop(rep, None)
                    break
                if len(rep.inflight) >= unit_limit(rep, rcfg):
                    self._room.pop(rep, None)
                    break
                entry = self._next_entry(busy=bool(rep.inflight))
                if entry is None:
                    break
                if len(rep.inflight) >= rcfg.units_in_flight:
                    rep.sequences_pending = None  # one extra unit per load report
                call = self.pool.call(rep, "generate" if entry.is_part else "process", entry.unit)
                rep.units_sent += 1
                rep.inflight[call] = self.pool.now()
                rep.exclusive = entry.exclusive
                rep.idle_since = None
                self._inflight_prompts += len(entry.unit.prompts)
                self._owner[call] = (rep, entry)
                self.accounting.dispatched(call, entry.unit)
            self._ask_load(rep)
            if not self._retry and self._exhausted:
                break

    def _ask_load(self, rep: Replica) -> None:
        """Ask a full replica to report back as soon as its engine runs fewer than its threshold of sequences."""
        rcfg = self.cfg.replicas
        if (rcfg.min_sequences_in_flight is not None and rep.min_sequences is not None and rep.load_ref is None
                and rep.hung_reason is None and not rep.exclusive and rep.draining is None
                and rcfg.units_in_flight <= len(rep.inflight) < rcfg.max_units_in_flight
                and (self._retry or not self._exhausted)):
            rep.load_ref = self.pool.call(rep, "load", rep.units_sent, rep.min_sequences, LOAD_WAIT_S)
            rep.load_units = rep.units_sent
            self._loads[rep.load_ref] = rep

    # -- the cluster: placement, drains, autoscaling ----------------------------------------------
    def _poll(self, now: float) -> None:
        """Every `node_poll_s`: where pending replicas stand, which nodes drain, the autoscaling decision."""
        rcfg = self.cfg.replicas
        self._next_poll = now + rcfg.node_poll_s
        for rep in self._replicas:
            if rep.placed_at is None:
                placement = self.pool.placement(rep)
                if placement.placed:
                    rep.placed_at, rep.node_id, rep.waiting_for = now, placement.node_id, None
                    self.history.note("")
                else:
                    rep.waiting_for = placement.waiting_for
        self._follow_drains(now, self.pool.draining_nodes())
        self._autoscale(now)
        self._request_capacity()
        if any(r.ready_at is not None or r.placed_at is not None for r in self._replicas):
            self._stalled_since = None
        elif self._stalled_since is None:
            self._stalled_since = now

    def _follow_drains(self, now: float, draining: dict[str, float | None]) -> None:
        margin = self.cfg.replicas.drain_margin_s
        for rep in list(self._replicas):
            if rep.node_id is None or rep.node_id not in draining or rep.drain_deadline is not None:
                continue
            deadline = draining[rep.node_id]
            rep.drain_deadline = float("inf") if deadline is None else deadline - margin
            left = "no deadline" if deadline is None else f"deadline in {max(deadline - now, 0):.0f} s"
            rep.draining = f"node {rep.node_id[:12]} drains ({left})"
            self._draining.add(rep)
            self._room.pop(rep, None)
            log.warning("%s: its node %s is draining (%s): no new units; %d in flight finish or move", rep.name,
                        rep.node_id, left, len(rep.inflight))
            self.history.note(f"{rep.name}: node drains")
            if rep.ready_at is None or not rep.inflight:
                self._retire(rep, "preempted")
        for rep in list(self._replicas):  # past the deadline (less the margin): move what is left
            if rep.drain_deadline is not None and now >= rep.drain_deadline and rep in self._replicas:
                victims = self._settle(rep)
                log.warning("%s: node drain deadline near; requeueing %d unit(s) elsewhere, unblamed", rep.name, len(victims))
                self._retire(rep, "preempted")
                self._requeue(victims)

    def _autoscale(self, now: float) -> None:
        ready = [r for r in self._replicas if r.ready_at is not None and r.draining is None]
        idle = [r for r in ready if not r.inflight and r.idle_since is not None]
        view = PoolView(
            now=now, target=self.target_replicas, ready=len(ready), idle=len(idle),
            idle_for_s=max((now - r.idle_since for r in idle), default=0.0),
            queued_prompts=max(self._prompts_left - self._inflight_prompts, 0), inflight_prompts=self._inflight_prompts,
            units_left=self._shards_left,
            tokens_per_prompt=tokens_per_prompt(self), tokens_per_s_per_replica=tokens_per_s_per_replica(self, now),
            time_left_s=None if self._finish_at is None else self._finish_at - now,
        )
        decision = self.autoscaler.decide(view, self.bounds)
        if decision is not None:
            self._set_target(decision.target, decision.reason)

    def _request_capacity(self) -> None:
        """Ask the autoscaler for room for every wanted replica while some cannot be placed; withdraw otherwise."""
        if not self.cfg.replicas.autoscale.request_resources:
            return
        pending = sum(1 for r in self._replicas if r.placed_at is None and r.waiting_for and r.draining is None)
        wanted = self.target_replicas if pending else 0
        if wanted != self._requested:
            self.pool.request_capacity(wanted)
            self._requested = wanted

    def _stop_requests(self) -> None:
        if self._requested and self.pool is not None:
            try:
                self.pool.request_capacity(0)
            finally:
                self._requested = 0

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
            if rep in self._replicas and rep.ready_at is not None and rep.draining is None:
                self._room[rep] = None
            return
        if call in self._starting:
            rep = self._starting[call]
            try:
                info = self.pool.result(call)
            except Exception as exc:  # noqa: BLE001 - any failure to start: replace it
                self._on_start_failure(rep, exc)
                return
            self._mark_ready(rep, info)
            return
        if call not in self._owner:  # already requeued with its replica
            return
        rep, entry = self._owner.pop(call)
        self.accounting.settled(call)
        self._release(rep, call, entry)
        try:
            out = self.pool.result(call)
        except Exception as exc:  # noqa: BLE001 - every failure kind is handled below
            self._on_failure(exc, rep, entry)
            return
        self._on_success(entry, out, rep)
        if rep.draining is not None and not rep.inflight and rep in self._replicas:
            self._retire(rep, "preempted" if rep.drain_deadline is not None else "drained")

    def _release(self, rep: Replica, ref: Any, entry: Entry) -> None:
        rep.inflight.pop(ref, None)
        rep.exclusive = False
        self._inflight_prompts -= len(entry.unit.prompts)
        if rep in self._replicas and rep.ready_at is not None and rep.draining is None and rep.hung_reason is None:
            self._room[rep] = None
            if not rep.inflight:
                rep.idle_since = self.pool.now()

    def _on_success(self, entry: Entry, out: ShardCommit | UnitResult, rep: Replica) -> None:
        rep.units_done += 1
        rep.completion_tokens += out.stats.completion_tokens
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
        self._prompts_left -= commit.stats.prompts
        self._shards_left -= 1

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
        self._mark_ready(rep, info)
        return True

    def _on_start_failure(self, rep: Replica, exc: Exception) -> None:
        """Replace a replica whose engine never started; its units never ran, so none is blamed.

        `max_attempts` failures in a row stop the run only when no replica
        works (a broken engine config or cluster); beside working replicas
        they pause new starts (`start_backoff_s`, doubling) instead.
        """
        reason = rep.hung_reason or redact(reason_of(exc))
        self._start_failures += 1
        working = any(r.ready_at is not None and r is not rep for r in self._replicas)
        if self._start_failures >= self.cfg.replicas.max_attempts:
            if not working:
                raise RuntimeError(f"replicas: {self._start_failures} replicas in a row failed to start (last: {reason}); "
                                   f"fix the engine config or the cluster, then re-run with the same run id to resume") from exc
            base = self.cfg.replicas.start_backoff_s
            wait = min(base * 2 ** self._backoff_steps, 10 * base)
            self._backoff_steps += 1
            self._start_failures = 0
            self._backoff_until = self.pool.now() + wait
            self._backoff_reason = f"{self.cfg.replicas.max_attempts} replica starts failed in a row (last: {reason})"
            log.warning("%s; the run goes on with the working replicas, next start in %.0f s", self._backoff_reason, wait)
        else:
            log.warning("%s failed to start: %s; replacing it", rep.name, reason)
        waiting = self._settle(rep)
        self._retire(rep, "hung" if rep.hung_reason else "start_failed")
        self._requeue(waiting)

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
        victims = [entry] + self._settle(rep)
        self._retire(rep, kind)
        if kind == "node_lost":  # the node went away (preempted, removed): no unit on it is to blame
            self._requeue(victims)
            return
        for victim in victims:
            # Alone on the engine (by rule, or because nothing else was in flight): the failure is its own. A hang
            # blames only a unit that was isolated on purpose; one that merely ran alone re-runs isolated first.
            alone = victim.exclusive or (len(victims) == 1 and kind != "hung")
            self._apply(victim, self.policy.on_failure(victim, reason, broken=True, alone=alone))

    def _requeue(self, entries: list[Entry]) -> None:
        """Put units back at the head of the queue without blame (as they were before they ran)."""
        if entries:
            self.progress.units_requeued += len(entries)
            self._retry.extendleft(reversed([Entry(e.unit, e.attempts, e.exclusive, e.split) for e in entries]))

    def _settle(self, rep: Replica) -> list[Entry]:
        """Settle a leaving replica's in-flight units: finished ones count, the rest are returned."""
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
            self._inflight_prompts -= len(entry.unit.prompts)
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
        """Remove `rep` from the pool and free what it holds; `kind` says why (a replacement or a drain)."""
        if rep not in self._replicas:
            return
        now = self.pool.now()
        stats = self._collect_requests(rep)
        self.pool.kill(rep)
        self.accounting.replica_ended(rep.name, stats)
        self._replicas.remove(rep)
        self._draining.discard(rep)
        self._room.pop(rep, None)
        _drop(self._starting, rep)
        _drop(self._loads, rep)
        if rep.ready_at is not None:
            self._ready_s_retired += now - rep.ready_at
            self._tokens_retired += rep.completion_tokens
        self._retired.append(replica_info(rep, now, retired=kind))
        p = self.progress
        if kind == "drained":
            p.replicas_drained += 1
        elif kind == "preempted":
            p.replicas_preempted += 1
        else:
            p.replicas_replaced += 1
            p.replaced_for[kind] = p.replaced_for.get(kind, 0) + 1
        self.history.note(f"{rep.name} {kind}")

    def _apply(self, entry: Entry, verdict: Verdict) -> None:
        if verdict.split:
            self.progress.units_split += 1
            log.warning("unit %s failed alone: re-running its %d prompts as %d sub-units", entry.unit.shard_id,
                        len(entry.unit.prompts), len(verdict.requeue))
        if verdict.requeue:
            if verdict.blamed:
                self.progress.units_retried += 1
            else:
                self.progress.units_requeued += 1
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
        """Kill a replica whose engine did not start in time, or that left a unit unfinished too long; stop the run
        when nothing works and a replica could not be placed within the start deadline."""
        for rep in list(self._replicas):
            if rep.hung_reason is not None:
                continue
            reason = missed_deadline(rep, now, self.cfg.replicas, stalled_since=self._stalled_since)
            if reason is None:
                continue
            if rep.placed_at is None:
                raise RuntimeError(f"no teacher replica could start: {rep.name} {reason}. Add that capacity to the "
                                   f"cluster ({self.pool.location()}) or lower what a replica asks for "
                                   f"(replicas.cpus_per_replica / gpus_per_replica / accelerator_type, "
                                   f"teacher.tensor_parallel_size), then re-run with the same run id to resume")
            self._kill_hung(rep, reason)

    def _kill_hung(self, rep: Replica, reason: str) -> None:
        log.warning("%s %s: replacing it", rep.name, reason)
        rep.hung_reason = reason
        self._room.pop(rep, None)
        self.pool.kill(rep)  # its in-flight calls now fail with ReplicaLost and are requeued as they surface
        if rep.ready_at is None:
            self._on_start_failure(rep, RuntimeError(reason))
        elif not rep.inflight:
            self._retire(rep, "hung")

def _drop(calls: dict[Any, Replica], rep: Replica) -> None:
    """Forget `rep`'s calls in `calls` (in place: the loop's wait set holds these dicts)."""
    for call in [c for c, r in calls.items() if r is rep]:
        del calls[call]


def _broken_kind(exc: BaseException, rep: Replica) -> str | None:
    """Why the replica must be replaced (`hung`, `node_lost`, `actor_died`, `engine_failure`), or None if it is fine."""
    if rep.hung_reason is not None:
        return "hung"
    if isinstance(exc, ReplicaLost):
        # A replica on a draining node that dies went with its node (the preemption came early).
        return "node_lost" if exc.node_lost or rep.drain_deadline is not None else "actor_died"
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
