"""UnitRunner logic (sampling rounds, rejection sampling, failures) on a scripted engine."""

import asyncio

from potstill.pipelines.engines.scripted import ScriptedEngine
from potstill.pipelines.generate.plan import iter_units
from potstill.pipelines.generate.unit_runner import UnitRunner
from potstill.pipelines.verify import build_judge
from potstill.schemas import Message, PromptRecord, SamplingConfig, VerifyConfig


def _unit(*questions, reference="4"):
    prompts = [PromptRecord.from_messages([Message(role="user", content=q)], source_row=i, reference=reference)
               for i, q in enumerate(questions)]
    return next(iter_units(prompts, "run", 100))


def _run(engine, unit, sampling, verify):
    runner = UnitRunner(engine, build_judge(verify), sampling, verify, retry_delay_s=0)
    return asyncio.run(runner.run(unit)), runner


def test_n_samples_per_prompt_with_verdicts_and_think_split():
    engine = ScriptedEngine(lambda p, k: "<think>2+2</think>4" if k % 2 == 0 else "<think>2+2</think>5")
    result, runner = _run(engine, _unit("a", "b"), SamplingConfig(n=4), VerifyConfig(method="exact"))
    assert len(result.rows) == 8 and runner.requests == 2
    assert [r["sample_index"] for r in result.rows[:4]] == [0, 1, 2, 3]
    assert [r["verified"] for r in result.rows[:4]] == [True, False, True, False]
    assert result.rows[0]["reasoning"] == "2+2" and result.rows[0]["answer"] == "4"
    assert result.stats.verified == 4 and result.stats.rejected == 4 and result.stats.samples_drawn == 8


def test_rejection_sampling_stops_at_k_accepted():
    engine = ScriptedEngine(lambda p, k: "4" if k >= 5 else "wrong")
    verify = VerifyConfig(method="exact", accept_per_prompt=2, max_samples_per_prompt=16, keep_rejected=False)
    result, runner = _run(engine, _unit("q"), SamplingConfig(n=2), verify)
    assert [r["verified"] for r in result.rows] == [True, True]
    assert result.stats.samples_drawn == 8  # rounds of 2: wrong x5, then 4, 4 (6 and 7 drawn in round 4)
    assert {r["attempt"] for r in result.rows} == {2, 3}


def test_rejection_sampling_budget_is_bounded():
    engine = ScriptedEngine(lambda p, k: "wrong")
    verify = VerifyConfig(method="exact", accept_per_prompt=1, max_samples_per_prompt=5)
    result, _ = _run(engine, _unit("q"), SamplingConfig(n=2), verify)
    assert result.stats.samples_drawn == 5 and result.stats.verified == 0
    assert len(result.rows) == 5 and not any(r["verified"] for r in result.rows)  # kept as rejected


def test_a_prompt_the_engine_refuses_is_recorded_failed_and_the_rest_complete():
    engine = ScriptedEngine(lambda p, k: "4", fail_on="poison")
    result, _ = _run(engine, _unit("fine", "poison", "also fine"), SamplingConfig(n=1), VerifyConfig(method="exact"))
    assert len(result.rows) == 2
    assert len(result.failed) == 1 and "prompt refused" in result.failed[0].reason
    assert result.stats.failed_prompts == 1


class FlakyEngine(ScriptedEngine):
    """Raises `error` on the first `times` requests for prompts containing `marker` (then answers normally)."""

    def __init__(self, script, marker: str, error: Exception, times: int):
        super().__init__(script)
        self.marker, self.error, self.left = marker, error, times

    async def generate(self, prompt_token_ids, n, request_id, max_tokens=None):
        if self.left and self.marker in "".join(chr(i) for i in prompt_token_ids):
            self.left -= 1
            raise self.error
        return await super().generate(prompt_token_ids, n, request_id, max_tokens)


def test_a_transient_engine_error_is_retried_before_the_prompt_is_blamed():
    engine = FlakyEngine(lambda p, k: "4", "second", RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 1)
    result, runner = _run(engine, _unit("first", "second"), SamplingConfig(n=2), VerifyConfig(method="exact"))
    assert result.failed == [] and len(result.rows) == 4  # today: "second" was recorded failed after one error
    assert runner.requests == 3


def test_a_prompt_that_keeps_failing_is_recorded_with_a_redacted_bounded_reason(monkeypatch):
    monkeypatch.setenv("TEACHER_API_KEY", "sk-live-canary-123456")
    error = ConnectionError("upstream said: key sk-live-canary-123456 rejected\n" + "x" * 5000)
    engine = FlakyEngine(lambda p, k: "4", "bad", error, 100)
    result, runner = _run(engine, _unit("fine", "bad"), SamplingConfig(n=1), VerifyConfig(method="exact"))
    (failed,) = result.failed
    assert failed.attempts == 3 and runner.requests == 1 + 3
    assert "sk-live-canary" not in failed.reason and "***" in failed.reason
    assert len(failed.reason) <= 500 and "\n" not in failed.reason
    assert failed.reason.startswith("ConnectionError: upstream said")


def test_pending_sequences_count_what_the_engine_still_runs():
    """The controller's admission signal: samples asked and not yet returned, back to 0 after success or refusal."""
    seen = []

    class Observed(ScriptedEngine):
        async def generate(self, *args, **kwargs):
            seen.append(runner.sequences_pending)
            return await super().generate(*args, **kwargs)

    engine = Observed(lambda p, k: "4", fail_on="poison")
    verify = VerifyConfig(method="exact")
    runner = UnitRunner(engine, build_judge(verify), SamplingConfig(n=3), verify, retry_delay_s=0)
    asyncio.run(runner.run(_unit("a", "b", "poison")))
    assert seen[:3] == [9, 9, 9]  # the unit's 3 prompts x n=3 count from the moment it starts, before any request
    assert seen[3:] == [3, 3]  # the refused prompt's retries: only its own samples are still asked for
    assert runner.sequences_pending == 0 and runner.units_started == 1


def test_load_long_poll_answers_once_the_unit_started_and_the_batch_ran_low():
    """`wait_for_load` returns as soon as the engine runs below the threshold, not at the timeout."""
    release = None

    class Gated(ScriptedEngine):
        async def generate(self, prompt_token_ids, n, request_id, max_tokens=None):
            if "slow" in "".join(chr(i) for i in prompt_token_ids):
                await release.wait()
            return await super().generate(prompt_token_ids, n, request_id, max_tokens)

    async def scenario():
        nonlocal release
        release = asyncio.Event()
        verify = VerifyConfig(method="exact")
        runner = UnitRunner(Gated(lambda p, k: "4"), build_judge(verify), SamplingConfig(n=2), verify)
        assert await runner.wait_for_load(units=1, below=100, timeout_s=0.05) == 0  # the unit has not started: timeout
        poll = asyncio.ensure_future(runner.wait_for_load(units=1, below=3, timeout_s=30))
        unit = asyncio.ensure_future(runner.run(_unit("fast 1", "fast 2", "slow")))
        low = await asyncio.wait_for(poll, 5)  # the fast prompts finish; the slow one's 2 samples remain
        release.set()
        await unit
        return low

    assert asyncio.run(scenario()) == 2


def test_every_sample_drawn_is_counted_by_kind_and_resampling_rounds_apart():
    """The split the run report charges costs by: accepted, truncated, the rest rejected; re-asks apart."""

    class Truncating(ScriptedEngine):
        async def generate(self, prompt_token_ids, n, request_id, max_tokens=None):
            gen = await super().generate(prompt_token_ids, n, request_id, max_tokens)
            for s in gen.samples:
                if s.text == "cut":
                    s.finish_reason = "length"
            return gen

    script = lambda p, k: ["wrong", "cut", "4", "4"][k]  # noqa: E731 - round 1: wrong, cut; round 2: 4, 4
    verify = VerifyConfig(method="exact", accept_per_prompt=2, max_samples_per_prompt=8, require_stop=True)
    result, runner = _run(Truncating(script), _unit("q"), SamplingConfig(n=2), verify)
    s = result.stats
    assert (s.samples_drawn, s.accepted_samples, s.truncated_samples) == (4, 2, 1)
    assert (s.accepted_tokens, s.truncated_tokens, s.completion_tokens) == (2, 3, 10)
    assert (s.resampled_samples, s.resampled_accepted, s.resampled_completion_tokens) == (2, 2, 2)
    assert s.prompt_tokens == 2 * s.resampled_prompt_tokens == 2
    assert runner.completion_tokens == 10 and runner.prompt_tokens_processed == 2
