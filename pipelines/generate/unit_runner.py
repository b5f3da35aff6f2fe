"""Generate, verify and assemble the trace rows of one work unit.

Every prompt of the unit is in flight at once (the engine batches them
continuously with the other units queued on the replica). With rejection
sampling a prompt is re-asked until `accept_per_prompt` samples pass or
`max_samples_per_prompt` have been drawn; every round is recorded in the
row's `attempt`. A request that raises without breaking the engine (a
transient error: one out-of-memory, an RPC blip; or a refusal such as a
prompt too long for the context) is retried up to `request_attempts` times
with a short backoff, then the prompt is recorded as failed with a redacted,
bounded reason; an `EngineFailure` propagates so the replica is replaced and
the unit requeued. When a unit fails, its other prompts'
requests are cancelled (never left running in the engine), and request ids
carry a per-run nonce so a retried unit never reuses a live request's id.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from potstill.pipelines.engines.protocol import EngineFailure, Sample, TeacherEngine
from potstill.pipelines.generate.plan import WorkUnit
from potstill.pipelines.generate.reasoning import split_reasoning
from potstill.pipelines.generate.reasons import failure_reason
from potstill.pipelines.verify.judge import Judge
from potstill.schemas.base import SCHEMA_VERSION
from potstill.schemas.manifest import FailedPrompt, ShardStats
from potstill.schemas.generation import SamplingConfig, VerifyConfig
from potstill.schemas.prompt import PromptRecord


@dataclass
class UnitResult:
    """Rows (TraceRecord-shaped dicts) of a unit, its failures and counts."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: list[FailedPrompt] = field(default_factory=list)
    stats: ShardStats = field(default_factory=ShardStats)


@dataclass
class _Judged:
    sample: Sample
    reasoning: str | None
    answer: str
    verified: bool | None
    attempt: int


def _judge_all(judge: Judge, prompt: PromptRecord, samples: list[Sample], attempt: int) -> list[_Judged]:
    out = []
    for s in samples:
        reasoning, answer = split_reasoning(s.text)
        verdict = judge.judge(answer, prompt.reference, completion=s.text, finish_reason=s.finish_reason,
                              completion_tokens=len(s.token_ids), has_reasoning=reasoning is not None)
        out.append(_Judged(s, reasoning, answer, verdict, attempt))
    return out


async def _gather_or_cancel(coros: list) -> list:
    """`asyncio.gather`, except that the first exception cancels the others before it propagates."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class _Refused(Exception):
    """A request raised on every try (`reason` is ready for the failure record)."""

    def __init__(self, reason: str, tries: int):
        super().__init__(reason)
        self.reason, self.tries = reason, tries


class UnitRunner:
    """Runs work units on one engine; one instance lives in each replica."""

    def __init__(self, engine: TeacherEngine, judge: Judge, sampling: SamplingConfig, verify: VerifyConfig, *,
                 request_attempts: int = 3, retry_delay_s: float = 0.5):
        self.engine = engine
        self.request_attempts = request_attempts
        self.retry_delay_s = retry_delay_s
        self.judge = judge
        self.sampling = sampling
        self.verify = verify
        self._sampling_json = json.dumps(sampling.model_dump(), sort_keys=True)
        self.requests = 0
        self.units_started = 0
        # Everything the engine returned, including work of units that later failed (the run report's "failed" cost).
        self.prompt_tokens_processed = 0
        self.completion_tokens = 0
        # Samples asked of the engine (or about to be) and not yet returned: the controller's admission signal.
        self.sequences_pending = 0
        self._changed = asyncio.Event()

    def _first_round(self) -> int:
        """Samples a prompt's first request asks for."""
        target = self.verify.accept_per_prompt
        if target is None:
            return self.sampling.n
        return min(max(target, self.sampling.n), self.verify.max_samples_per_prompt)

    def _add_pending(self, delta: int) -> None:
        self.sequences_pending += delta
        self._changed.set()

    async def wait_for_load(self, units: int, below: int, timeout_s: float) -> int:
        """`sequences_pending` once at least `units` units have started and fewer than `below` sequences are
        pending, or when `timeout_s` runs out (a long poll: the controller learns the moment the batch runs low)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.units_started < units or self.sequences_pending >= below:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
        return self.sequences_pending

    async def run(self, unit: WorkUnit) -> UnitResult:
        nonce = uuid.uuid4().hex[:8]
        # Count the unit's first-round samples before any request task runs, so a load report made right
        # after this unit arrived already includes them.
        reserved = self._first_round()
        self.units_started += 1
        self._add_pending(reserved * len(unit.prompts))
        encoded = self.engine.encode_chats([[m.model_dump() for m in p.messages] for p in unit.prompts])
        results = await _gather_or_cancel([self._run_prompt(unit, p, ids, nonce, reserved)
                                           for p, ids in zip(unit.prompts, encoded)])
        out = UnitResult(stats=ShardStats(prompts=len(unit.prompts)))
        for rows, failure, stats in results:
            out.rows.extend(rows)
            if failure is not None:
                out.failed.append(failure)
            out.stats = out.stats + stats
        return out

    async def _run_prompt(self, unit: WorkUnit, prompt: PromptRecord, ids: Any, nonce: str,
                          reserved: int) -> tuple[list[dict[str, Any]], FailedPrompt | None, ShardStats]:
        held = reserved  # this prompt's share of the unit's reserved count, until its first request takes it over
        judged: list[_Judged] = []
        prompt_tokens = [0]  # per round: prompt tokens the engine processed
        try:
            if isinstance(ids, Exception):  # a template that cannot render this conversation
                failure = FailedPrompt(prompt_id=prompt.prompt_id, reason=failure_reason(f"chat template: {ids}"), attempts=1)
                return [], failure, ShardStats(failed_prompts=1)
            target = self.verify.accept_per_prompt
            budget = self.verify.max_samples_per_prompt if target else self.sampling.n
            attempt, prompt_length = 0, 0
            while True:
                accepted = sum(j.verified is True for j in judged)
                if len(judged) >= budget or (target is None and judged) or (target and accepted >= target):
                    break
                want = self.sampling.n if target is None else min(max(target - accepted, self.sampling.n), budget - len(judged))
                self._add_pending(want - held)
                held = 0
                try:
                    gen = await self._generate(ids, want, f"{unit.shard_id}/{prompt.prompt_id[:16]}/{attempt}/{nonce}",
                                               prompt.max_tokens)
                except _Refused as refused:  # every try raised: not the replica's fault, but this prompt gives up
                    failure = FailedPrompt(prompt_id=prompt.prompt_id, reason=refused.reason, attempts=refused.tries)
                    return [], failure, self._stats(judged, prompt_tokens, failed=True)
                finally:
                    self._add_pending(-want)
                prompt_length = prompt_length or gen.prompt_tokens
                if attempt:
                    prompt_tokens.append(0)
                prompt_tokens[-1] += gen.prompt_tokens_processed
                self.prompt_tokens_processed += gen.prompt_tokens_processed
                self.completion_tokens += sum(s.num_tokens for s in gen.samples)
                if self.judge.blocking:  # math-verify or a user function: keep the event loop (and the batch) moving
                    judged.extend(await asyncio.to_thread(_judge_all, self.judge, prompt, gen.samples, attempt))
                else:
                    judged.extend(_judge_all(self.judge, prompt, gen.samples, attempt))
                attempt += 1
        finally:
            if held:
                self._add_pending(-held)
        kept = self._keep(judged, target)
        rows = [self._row(unit, prompt, j, i, prompt_length) for i, j in enumerate(kept)]
        stats = self._stats(judged, prompt_tokens) + ShardStats(
            traces=len(rows), verified=sum(r["verified"] is True for r in rows),
            rejected=sum(r["verified"] is False for r in rows))
        return rows, None, stats

    @staticmethod
    def _stats(judged: list[_Judged], prompt_tokens: list[int], failed: bool = False) -> ShardStats:
        """Counts over every sample drawn for one prompt (kept or not), split the way the run report charges cost."""
        accepted = [j for j in judged if j.verified is not False]
        truncated = [j for j in judged if j.verified is False and j.sample.finish_reason == "length"]
        resampled = [j for j in judged if j.attempt > 0]
        return ShardStats(
            failed_prompts=int(failed), samples_drawn=len(judged), prompt_tokens=sum(prompt_tokens),
            completion_tokens=sum(j.sample.num_tokens for j in judged),
            accepted_samples=len(accepted), accepted_tokens=sum(j.sample.num_tokens for j in accepted),
            truncated_samples=len(truncated), truncated_tokens=sum(j.sample.num_tokens for j in truncated),
            resampled_samples=len(resampled), resampled_accepted=sum(j.verified is not False for j in resampled),
            resampled_prompt_tokens=sum(prompt_tokens[1:]),
            resampled_completion_tokens=sum(j.sample.num_tokens for j in resampled),
        )

    async def _generate(self, ids: list[int], want: int, request_id: str, max_tokens: int | None):
        """One engine request, retried (fresh request ids, short backoff) while it raises anything but EngineFailure."""
        for tries in range(1, self.request_attempts + 1):
            self.requests += 1
            try:
                return await self.engine.generate(ids, want, f"{request_id}/{tries}" if tries > 1 else request_id,
                                                  max_tokens=max_tokens)
            except EngineFailure:
                raise
            except Exception as exc:  # noqa: BLE001 - transient or a refusal: retried, then recorded
                if tries == self.request_attempts:
                    raise _Refused(failure_reason(f"{type(exc).__name__}: {exc}"), tries) from exc
                await asyncio.sleep(self.retry_delay_s * 2 ** (tries - 1))
        raise AssertionError("unreachable")

    def _keep(self, judged: list[_Judged], target: int | None) -> list[_Judged]:
        if target is not None:
            accepted = [j for j in judged if j.verified is True][:target]
            others = [j for j in judged if j.verified is not True] if self.verify.keep_rejected else []
            return accepted + others
        if self.verify.keep_rejected:
            return judged
        return [j for j in judged if j.verified is not False]

    def _row(self, unit: WorkUnit, prompt: PromptRecord, j: _Judged, index: int, prompt_tokens: int) -> dict[str, Any]:
        s = j.sample
        return {
            "run_id": unit.run_id, "shard_id": unit.shard_id, "prompt_id": prompt.prompt_id,
            "sample_index": index, "attempt": j.attempt,
            "messages": [m.model_dump() for m in prompt.messages], "reference": prompt.reference,
            "completion": s.text, "reasoning": j.reasoning, "answer": j.answer,
            "finish_reason": s.finish_reason, "prompt_tokens": prompt_tokens,
            "completion_tokens": s.num_tokens, "completion_token_ids": s.token_ids if s.completion_tokens is None else None,
            "topk_ids": s.topk_ids, "topk_logprobs": s.topk_logprobs,
            "verified": j.verified, "verifier": self.judge.name,
            "teacher_model": self.engine.model_name, "teacher_revision": self.engine.revision,
            "sampling": self._sampling_json, "created_at": datetime.now(timezone.utc),
            "schema_version": SCHEMA_VERSION,
        }
