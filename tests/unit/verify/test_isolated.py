"""Verdicts are bounded and off the event loop: an answer sympy cannot finish is judged False while generation goes on.

    .venv/bin/pytest tests/unit/verify/test_isolated.py -q
"""

from __future__ import annotations

import asyncio
import threading

from potstill.pipelines.engines.scripted import ScriptedEngine
from potstill.pipelines.generate.plan import WorkUnit
from potstill.pipelines.generate.unit_runner import UnitRunner
from potstill.pipelines.verify import build_judge, verify
from potstill.pipelines.verify.isolated import IsolatedChecker, close_shared_checkers, shared_checker
from potstill.schemas.generation import SamplingConfig, VerifyConfig
from potstill.schemas.prompt import Message, PromptRecord

TOWER = "\\boxed{9^{9^{9^{9}}}}"  # sympy computes a power of ~370 million digits inside one C call
HANG_GUARD_S = 600  # a broken bound would otherwise hang the test run; a bounded verdict comes back far sooner


def _prompt(text: str, reference: str, row: int) -> PromptRecord:
    return PromptRecord.from_messages([Message(role="user", content=text)], source_row=row, reference=reference)


def test_a_tower_of_powers_is_judged_false_while_the_event_loop_and_the_other_prompts_go_on():
    def script(prompt: str, k: int) -> str:
        return f"<think>...</think>{TOWER}" if prompt == "tower" else "<think>2+2</think>\\boxed{4}"

    verify_cfg = VerifyConfig(method="math", timeout_s=1.0)
    runner = UnitRunner(ScriptedEngine(script), build_judge(verify_cfg), SamplingConfig(n=1), verify_cfg)
    unit = WorkUnit("r", "000000-x", 0, [_prompt("tower", "1", 0), _prompt("2+2?", "4", 1)])
    outcome: dict = {}

    async def main() -> None:
        ticks = 0
        stop = asyncio.Event()

        async def heartbeat() -> None:  # stands in for the engine's request handling on the replica's loop
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(heartbeat())
        result = await runner.run(unit)
        stop.set()
        await beat
        outcome.update(result=result, ticks=ticks)

    worker = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    worker.start()
    worker.join(HANG_GUARD_S)
    assert not worker.is_alive(), "the verdict was never given: the verifier is not bounded"
    rows = {r["prompt_id"]: r for r in outcome["result"].rows}
    assert rows[unit.prompts[0].prompt_id]["verified"] is False  # judged False, not failed, not hung
    assert rows[unit.prompts[1].prompt_id]["verified"] is True
    assert outcome["ticks"] > 10  # the loop kept running while sympy was stuck in the worker
    assert runner.judge.checker.timeouts >= 1


def test_the_worker_is_replaced_after_a_timeout_and_later_verdicts_are_right():
    checker = IsolatedChecker(timeout_s=0.5)
    try:
        assert checker.check("math", TOWER, "1") is False
        assert checker.check("math", "\\boxed{\\frac{1}{2}}", "0.5") is True
        assert checker.timeouts == 1
    finally:
        checker.close()


def test_public_verify_is_bounded_too():
    assert verify(f"the answer is {TOWER}", "1") is False
    assert verify("the answer is \\boxed{4}", "4") is True


def test_closing_the_shared_pools_stops_their_processes_and_the_next_check_starts_a_fresh_one():
    # What a CLI command does at its end, so that it does not wait on its verifier processes to exit.
    checker = shared_checker(7.5)
    assert checker.check("math", "4", "4") is True
    process = checker._workers[0].process
    close_shared_checkers()
    assert process.poll() is not None
    again = shared_checker(7.5)
    assert again is not checker and again.check("math", "5", "4") is False
    close_shared_checkers()
