"""The controller's cost, budget and metrics bookkeeping for one invocation of a run.

    accounting = RunAccounting(cfg, storage, run_id, observer)      # reads earlier invocations' spend
    accounting.replica_added(name, gpus, cpus) ... replica_ready(name) ... replica_ended(name, stats)
    if accounting.may_dispatch(unit): key = send(unit); accounting.dispatched(key, unit)   # budget.max_usd
    accounting.settled(key); accounting.credit(name, result_stats)  # a result came back from replica `name`
    accounting.tick(live=2, pending=1, queued=14)                   # metrics gauges; reports/<id>.json now and then
    accounting.generation_s = seconds; report = accounting.finish("complete")   # reports/<id>.json and report.json

The controller calls these from its loop; the pure parts are `cost.CostLedger`
(who is charged what) and `budget.BudgetGuard` (may one more unit go). Each
invocation rewrites its own `reports/<invocation_id>.json` every
`REPORT_EVERY_S` seconds, so a crashed invocation's spend still counts
against the budget of the next one (up to the last rewrite).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Protocol

from pydantic import ValidationError

from potstill.pipelines.generate.budget import BudgetGuard, UnitCostEstimate
from potstill.pipelines.generate.cost import CostLedger, Prices, combine
from potstill.pipelines.generate.plan import WorkUnit
from potstill.schemas.generation import GenerationConfig
from potstill.schemas.manifest import ShardStats
from potstill.schemas.report import CostReport, InvocationReport, RunReport

log = logging.getLogger("potstill.accounting")

REPORTS_DIR = "reports"
RUN_REPORT = "report.json"
REPORT_EVERY_S = 15.0


class RunObserver(Protocol):
    """Where the pool's live figures go (Prometheus gauges through `potstill.actors.metrics` on Ray)."""

    def pool(self, live: int, pending: int, queued: int, inflight: int) -> None: ...

    def spend(self, usd: float) -> None: ...


def unit_chars(unit: WorkUnit) -> int:
    return sum(len(m.content) for p in unit.prompts for m in p.messages)


def read_invocations(storage: Any, exclude: str | None = None) -> list[InvocationReport]:
    """Every earlier invocation's report in `reports/`, oldest first (an unreadable one is skipped with a warning)."""
    out = []
    for rel in sorted(storage.list(REPORTS_DIR)):
        if not rel.endswith(".json") or (exclude and rel.endswith(f"/{exclude}.json")):
            continue
        try:
            out.append(InvocationReport.model_validate_json(storage.read_bytes(rel)))
        except (ValidationError, ValueError, FileNotFoundError) as exc:
            log.warning("skipping %s: not an invocation report (%s)", storage.uri_of(rel), str(exc).splitlines()[0])
    return sorted(out, key=lambda r: r.started_at)


class RunAccounting:
    """Ledger, budget and live metrics of one invocation."""

    def __init__(self, cfg: GenerationConfig, storage: Any, run_id: str, observer: RunObserver | None = None,
                 clock=time.time):
        self.cfg, self.storage, self.run_id, self.observer, self.clock = cfg, storage, run_id, observer, clock
        self.ledger = CostLedger(Prices.of(cfg))
        started = datetime.now(timezone.utc)
        self.started_at, self._t0 = started, clock()
        self.invocation_id = f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        self.earlier = read_invocations(storage)
        self.guard = BudgetGuard(cfg.budget.max_usd, sum(r.cost.usd_total for r in self.earlier))
        self.estimate = UnitCostEstimate(cfg)
        self._inflight: dict[Any, tuple[int, int]] = {}  # dispatched unit key -> (prompts, message chars)
        self._prompts_credited = 0
        self._last_write = self._t0
        self.generation_s = 0.0

    # -- replicas ---------------------------------------------------------------------------
    def replica_added(self, name: str, gpus: float, cpus: float) -> None:
        self.ledger.replica_added(name, gpus, cpus, self.clock())

    def replica_ready(self, name: str) -> None:
        self.ledger.replica_ready(name, self.clock())

    def replica_usage(self, name: str, stats: dict[str, Any] | None) -> None:
        """A replica's `stats()`: the tokens its engine processed so far, lost work included."""
        if stats:
            self.ledger.engine_usage(name, int(stats.get("prompt_tokens", 0)), int(stats.get("completion_tokens", 0)))

    def replica_ended(self, name: str, stats: dict[str, Any] | None = None) -> None:
        self.replica_usage(name, stats)
        self.ledger.replica_ended(name, self.clock())

    # -- units ----------------------------------------------------------------------------------
    def may_dispatch(self, unit: WorkUnit) -> bool:
        """Whether the budget admits `unit` now. A refusal with units in flight waits for them (their results
        count as spent and sharpen the estimate); with none in flight it is final for this invocation."""
        if self.guard.max_usd is None:
            return True
        if self.guard.stopped:
            return False
        spent = self.ledger.spent_usd(self.clock())
        self.estimate.update(self._prompts_credited, spent)
        inflight = self.estimate.usd(sum(p for p, _ in self._inflight.values()), sum(c for _, c in self._inflight.values()))
        if self.guard.allows(spent, inflight, self.estimate.usd(len(unit.prompts), unit_chars(unit))):
            return True
        if not self._inflight:
            self.guard.stop()
            log.warning("%s", self.guard.reason)
        return False

    def dispatched(self, key: Any, unit: WorkUnit) -> None:
        self._inflight[key] = (len(unit.prompts), unit_chars(unit))

    def settled(self, key: Any) -> None:
        self._inflight.pop(key, None)

    def credit(self, name: str, stats: ShardStats) -> None:
        """Replica `name` produced a (sub-)unit result with these counts."""
        self.ledger.credit(name, stats)
        self._prompts_credited += stats.prompts

    # -- reporting -----------------------------------------------------------------------------
    @property
    def budget_stopped(self) -> bool:
        return self.guard.stopped

    def spent_usd(self) -> float:
        """This run's spend: earlier invocations plus this one so far."""
        return self.guard.spent_before + self.ledger.spent_usd(self.clock())

    def tick(self, live: int, pending: int, queued: int) -> None:
        """Update the live gauges; rewrite this invocation's report every REPORT_EVERY_S seconds."""
        if self.observer is not None:
            self.observer.pool(live, pending, queued, len(self._inflight))
            self.observer.spend(self.spent_usd())
        if self.clock() - self._last_write >= REPORT_EVERY_S:
            self._write_invocation("running")

    def cost(self) -> CostReport:
        now = self.clock()
        return self.ledger.report(now, generation_s=self.generation_s, elapsed_s=now - self._t0,
                                  prompts_done=self._prompts_credited)

    def _write_invocation(self, status: str) -> InvocationReport:
        report = InvocationReport(run_id=self.run_id, invocation_id=self.invocation_id, started_at=self.started_at,
                                  updated_at=datetime.now(timezone.utc), status=status, cost=self.cost())
        self._last_write = self.clock()
        try:
            self.storage.put(f"{REPORTS_DIR}/{self.invocation_id}.json", report.model_dump_json(indent=2).encode())
        except Exception as exc:  # noqa: BLE001 - a report must never fail the run; the final write retries
            log.warning("could not write the invocation report: %s", exc)
        return report

    def finish(self, status: str) -> RunReport:
        """Write this invocation's final report and `report.json` (every invocation added up); returns the latter."""
        mine = self._write_invocation(status)
        invocations = [*self.earlier, mine]
        total = combine([r.cost for r in invocations])
        run = RunReport(run_id=self.run_id, status=status, budget_usd=self.cfg.budget.max_usd,
                        spent_usd=total.usd_total, total=total, invocations=invocations)
        self.storage.put(RUN_REPORT, run.model_dump_json(indent=2).encode())
        if self.observer is not None:
            self.observer.spend(total.usd_total)
        return run


def summary_of(run: RunReport) -> dict[str, Any]:
    """The run report's headline figures for the CLI summary (this invocation and the run)."""
    this = run.invocations[-1].cost
    return json.loads(json.dumps({
        "status": run.status, "budget_usd": run.budget_usd, "spent_usd": run.spent_usd,
        "this_invocation": this.model_dump(exclude={"replicas"}),
        "replicas": [r.model_dump() for r in this.replicas],
        "run": run.total.model_dump(exclude={"replicas"}),
    }, default=str))
