"""Cost, budget and pool metrics through the real controller on the simulated pool (no Ray, virtual clock).

Every run commits real shards to a local folder, so the budget's stop and
resume are checked against what is really committed.
"""

from __future__ import annotations

import pytest

from potstill.pipelines.generate.controller import GenerationController
from potstill.pipelines.generate.simulated_pool import SimulatedPool
from potstill.pipelines.output.commit import read_commits, read_manifest
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import GenerationConfig
from potstill.schemas.report import RunReport

COUNT, PER_SHARD, N = 40, 5, 2
SCRIPT = lambda prompt, k: "<think>" + "x" * 40 + "</think>42"  # noqa: E731 - 57 tokens a sample, every time


def api_config(out: str, **sections) -> GenerationConfig:
    """An API teacher at $1 per output token, so dollars count tokens (the simulated pool scripts the engine)."""
    return GenerationConfig.model_validate({
        "run_id": "priced",
        "prompts": {"arithmetic": {"count": COUNT, "digits": 2, "seed": 5}},
        "teacher": {"engine": "openai", "model": "scripted-teacher", "revision": "test", "api": {
            "base_url": "http://unused/v1", "price": {"output_usd_per_million": 1e6}}},
        "replicas": {"unit_timeout_s": 60, "start_timeout_s": 120, "max_attempts": 2},
        "sampling": {"n": N, "max_tokens": 64},
        "verify": {"method": "none"},
        "output": {"uri": out, "prompts_per_shard": PER_SHARD},
        **sections,
    })


class Observer:
    def __init__(self):
        self.pools, self.spends = [], []

    def pool(self, live, pending, queued, inflight):
        self.pools.append((live, pending, queued, inflight))

    def spend(self, usd):
        self.spends.append(usd)


def _run(cfg: GenerationConfig, observer=None, fault=None):
    pool = SimulatedPool(cfg, cfg.output.uri, script=SCRIPT, fault=fault, prompt_s=1.0)
    return GenerationController(cfg, cfg.output.uri, observer=observer).run(pool)


def test_a_budget_stops_within_one_unit_and_a_larger_one_resumes_exactly_once(tmp_path):
    unit_cost = PER_SHARD * N * 57
    full = COUNT * N * 57
    out = str(tmp_path / "out")
    first = _run(api_config(out, budget={"max_usd": 0.5 * full}))
    assert first.status == "budget_exhausted"
    spent = first.cost["spent_usd"]
    assert 0.5 * full - unit_cost <= spent <= 0.5 * full
    committed = read_commits(Storage(out))
    assert first.shards == len(committed) == spent // unit_cost and not (tmp_path / "out" / "_SUCCESS").exists()

    second = _run(api_config(out, budget={"max_usd": 2 * full}))
    assert second.status == "complete" and second.shards_skipped == len(committed)
    assert second.engine_requests == COUNT - PER_SHARD * len(committed)
    manifest = read_manifest(out)
    assert manifest.totals.traces == COUNT * N and len(manifest.shards) == COUNT // PER_SHARD
    report = RunReport.model_validate_json((tmp_path / "out" / "report.json").read_text())
    assert report.spent_usd == pytest.approx(full) and [i.status for i in report.invocations] == [
        "budget_exhausted", "complete"]


def test_a_spent_budget_starts_no_replica(tmp_path):
    out = str(tmp_path / "out")
    _run(api_config(out, budget={"max_usd": 5 * PER_SHARD * N * 57 + 1}))
    again = _run(api_config(out, budget={"max_usd": 5 * PER_SHARD * N * 57 + 1}))
    assert again.status == "budget_exhausted" and again.engine_requests == 0
    assert again.cost["this_invocation"]["usd_total"] == 0
    assert again.replicas == [], "a replica was started for a run its budget could not pay for"


def test_replica_time_is_charged_and_a_replica_that_died_before_producing_is_failed(tmp_path):
    cfg = GenerationConfig.model_validate({
        **api_config(str(tmp_path / "out")).model_dump(exclude={"teacher"}),
        "teacher": {"model": "scripted-teacher", "revision": "test"},
        "replicas": {"unit_timeout_s": 60, "start_timeout_s": 120, "max_attempts": 2, "cpus_per_replica": 2,
                     "price": {"usd_per_cpu_hour": 3600.0}},  # $2 per second of a 2-CPU replica's life
    })
    observer = Observer()
    summary = _run(cfg, observer, fault=lambda e: "replica_dies" if e.replica == 1 and e.method == "process" else None)
    assert summary.replicas_replaced == 1
    report = RunReport.model_validate_json((tmp_path / "out" / "report.json").read_text())
    replicas = {r.name: r for r in report.invocations[0].cost.replicas}
    assert set(replicas) == {"replica-1", "replica-2"}
    assert replicas["replica-1"].completion_tokens == 0 and replicas["replica-1"].usd == pytest.approx(
        2 * replicas["replica-1"].lifetime_s)
    assert report.total.usd_by_kind.failed >= replicas["replica-1"].usd > 0
    assert report.total.usd_total == pytest.approx(sum(2 * r.lifetime_s for r in replicas.values()))
    assert report.total.cpu_hours == pytest.approx(sum(2 * r.lifetime_s for r in replicas.values()) / 3600)
    # The pool's gauges: a live replica, units queued and in flight, a growing spend.
    assert any(live == 1 and inflight > 0 for live, _, _, inflight in observer.pools)
    assert max(queued for _, _, queued, _ in observer.pools) > 0
    assert observer.spends == sorted(observer.spends) and observer.spends[-1] == pytest.approx(report.spent_usd)


def test_the_gauges_count_units_in_flight_even_when_each_finishes_within_one_wait(tmp_path):
    """One unit at a time, each done long before the loop's 1 s wait times out: the gauges, set while the loop
    waits, still show it in flight (set only after a result settled, they showed 0 all run), and 0 at the end."""
    cfg = api_config(str(tmp_path / "out"), replicas={
        "unit_timeout_s": 60, "start_timeout_s": 120, "max_attempts": 2, "units_in_flight": 1,
        "min_sequences_in_flight": None})
    observer = Observer()
    pool = SimulatedPool(cfg, cfg.output.uri, script=SCRIPT, prompt_s=0.01)
    assert GenerationController(cfg, cfg.output.uri, observer=observer).run(pool).status == "complete"
    in_flight = [inflight for *_, inflight in observer.pools]
    assert in_flight.count(1) >= COUNT // PER_SHARD and max(in_flight) == 1 and in_flight[-1] == 0
