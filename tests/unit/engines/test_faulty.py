"""Configured fault injection (`FaultyEngine`) over the scripted engine, and how UnitRunner reacts to it."""

from __future__ import annotations

import asyncio

import pytest

from potstill.pipelines.engines.faulty import FaultPlan, FaultyEngine
from potstill.pipelines.engines.protocol import EngineFailure
from potstill.pipelines.engines.scripted import ScriptedEngine
from potstill.pipelines.generate.plan import iter_units
from potstill.pipelines.generate.unit_runner import UnitRunner
from potstill.pipelines.verify import build_judge
from potstill.schemas import Message, PromptRecord, SamplingConfig, VerifyConfig
from potstill.schemas.generation import FaultsConfig


def _faulty(rules, state_dir=None) -> FaultyEngine:
    plan = FaultPlan(FaultsConfig.model_validate({"rules": rules, "state_dir": state_dir}))
    return FaultyEngine(ScriptedEngine(lambda p, k: "4"), plan)


async def _ask(engine: FaultyEngine, text: str):
    (ids,) = engine.encode_chats([[{"role": "user", "content": text}]])
    return await engine.generate(ids, 1, "req")


def test_a_rule_fires_only_for_its_marker_and_only_times_times_across_replicas(tmp_path):
    rules = [{"action": "engine_failure", "marker": "poison", "times": 2}]
    replica_a, replica_b = _faulty(rules, str(tmp_path)), _faulty(rules, str(tmp_path))  # share the count
    assert asyncio.run(_ask(replica_a, "fine")).samples[0].text == "4"
    with pytest.raises(EngineFailure, match="injected engine failure"):
        asyncio.run(_ask(replica_a, "a poison prompt"))
    with pytest.raises(EngineFailure):
        asyncio.run(_ask(replica_b, "a poison prompt"))
    assert asyncio.run(_ask(replica_b, "a poison prompt")).samples[0].text == "4"  # spent


def test_a_hanging_request_never_returns():
    engine = _faulty([{"action": "hang", "marker": "stuck"}])

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_ask(engine, "stuck"), 0.2)

    asyncio.run(main())


def test_a_held_request_waits_for_its_release_file_then_answers(tmp_path):
    engine = _faulty([{"action": "hold", "marker": "gated", "release_file": "go"}], str(tmp_path))

    async def main():
        held = asyncio.ensure_future(_ask(engine, "gated question"))
        assert (await _ask(engine, "free question")).samples[0].text == "4"  # others pass
        await asyncio.sleep(0.5)
        assert not held.done()
        (tmp_path / "go").touch()
        assert (await asyncio.wait_for(held, 5)).samples[0].text == "4"

    asyncio.run(main())


def test_an_engine_failure_cancels_the_units_other_requests():
    engine = _faulty([{"action": "hang", "marker": "stuck"}, {"action": "engine_failure", "marker": "boom"}])
    prompts = [PromptRecord.from_messages([Message(role="user", content=q)], source_row=i)
               for i, q in enumerate(["fine", "stuck", "boom"])]
    unit = next(iter_units(prompts, "run", 10))
    runner = UnitRunner(engine, build_judge(VerifyConfig(method="none")), SamplingConfig(n=1), VerifyConfig(method="none"))

    async def main():
        with pytest.raises(EngineFailure):
            await asyncio.wait_for(runner.run(unit), 5)  # not stuck behind the hanging request
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not others, f"requests left running: {others}"

    asyncio.run(main())
