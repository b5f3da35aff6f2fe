"""The controller's bookkeeping over a real local output root: reports, spend carried across invocations, the budget."""

from __future__ import annotations

import json

import pytest

from potstill.pipelines.generate.accounting import RUN_REPORT, RunAccounting, read_invocations
from potstill.pipelines.generate.plan import iter_units
from potstill.pipelines.output.storage import Storage
from potstill.schemas import GenerationConfig, Message, PromptRecord
from potstill.schemas.manifest import ShardStats
from potstill.schemas.report import RunReport


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Gauges:
    def __init__(self):
        self.seen = []

    def pool(self, live, pending, queued, inflight):
        self.seen.append(("pool", live, pending, queued, inflight))

    def spend(self, usd):
        self.seen.append(("spend", round(usd, 6)))


def _cfg(max_usd=None) -> GenerationConfig:
    return GenerationConfig.model_validate({
        "prompts": {"arithmetic": {}}, "sampling": {"n": 1, "max_tokens": 10},
        "teacher": {"engine": "openai", "model": "m", "api": {"base_url": "http://h/v1", "price": {
            "input_usd_per_million": 0.0, "output_usd_per_million": 1e6}}},
        "budget": {"max_usd": max_usd}})


def _unit(index: int, prompts: int = 4):
    records = [PromptRecord.from_messages([Message(role="user", content=f"q{index}-{i}")], source_row=i)
               for i in range(prompts)]
    return next(iter_units(records, "run", 100))


def _result(tokens: int, prompts: int = 4) -> ShardStats:
    return ShardStats(prompts=prompts, traces=prompts, samples_drawn=prompts, completion_tokens=tokens,
                      accepted_samples=prompts, accepted_tokens=tokens)


def test_an_invocation_reports_as_it_goes_and_the_next_one_counts_its_spend(tmp_path):
    storage, clock, gauges = Storage(str(tmp_path)), Clock(), Gauges()
    first = RunAccounting(_cfg(), storage, "run", gauges, clock=clock)
    first.replica_added("replica-1", gpus=0, cpus=1)
    first.replica_ready("replica-1")
    first.credit("replica-1", _result(tokens=3))
    clock.t = 20.0
    first.tick(live=1, pending=0, queued=5)  # past REPORT_EVERY_S: the invocation's report is written
    (running,) = read_invocations(storage)
    assert running.status == "running" and running.cost.usd_total == pytest.approx(3.0)
    assert ("pool", 1, 0, 5, 0) in gauges.seen and ("spend", 3.0) in gauges.seen
    first.replica_ended("replica-1", {"prompt_tokens": 0, "completion_tokens": 5})  # 2 tokens of lost work
    run = first.finish("complete")
    assert run.spent_usd == pytest.approx(5.0) and run.total.usd_by_kind.failed == pytest.approx(2.0)

    second = RunAccounting(_cfg(), storage, "run", clock=clock)
    assert second.spent_usd() == pytest.approx(5.0)
    second.replica_added("replica-1", 0, 1)
    second.credit("replica-1", _result(tokens=1))
    run = second.finish("complete")
    on_disk = RunReport.model_validate_json(storage.read_bytes(RUN_REPORT))
    assert on_disk == run and len(run.invocations) == 2 and run.spent_usd == pytest.approx(6.0)
    assert run.total.accepted_traces == 8 and run.total.usd_per_accepted_trace == pytest.approx(6 / 8)


def test_the_budget_stops_dispatching_when_spend_in_flight_and_next_would_pass_it(tmp_path):
    storage = Storage(str(tmp_path))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "not-a-report.json").write_text(json.dumps({"hello": 1}))  # skipped with a warning
    acc = RunAccounting(_cfg(max_usd=100.0), storage, "run", clock=Clock())
    acc.replica_added("r", 0, 1)
    # Before any result: a unit of 4 short prompts is priced at 4 x n x max_tokens = 40 output tokens = $40.
    assert acc.may_dispatch(_unit(0))
    acc.dispatched("a", _unit(0))
    assert acc.may_dispatch(_unit(1))
    acc.dispatched("b", _unit(1))
    assert not acc.may_dispatch(_unit(2))  # 40 + 40 in flight + 40 next > 100: wait for the units in flight
    assert not acc.budget_stopped
    acc.settled("a")
    acc.credit("r", _result(tokens=4))  # measured: $1 a prompt, so unit 2 fits after all
    assert acc.may_dispatch(_unit(2))
    acc.dispatched("c", _unit(2))
    acc.settled("b")
    acc.settled("c")
    acc.credit("r", _result(tokens=90, prompts=8))  # now $94 spent over 12 prompts: the next 4 would pass 100
    assert not acc.may_dispatch(_unit(3)) and acc.budget_stopped  # nothing in flight: final
    assert "budget.max_usd ($100.0000) reached: $94.0000 spent" in acc.guard.reason
    assert not acc.may_dispatch(_unit(4))
    assert acc.finish("budget_exhausted").status == "budget_exhausted"
