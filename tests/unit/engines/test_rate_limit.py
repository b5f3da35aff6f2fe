"""The API teacher's client-side budgets on a fake clock: RPM spacing, TPM with debt, the 429 hold, concurrency."""

from __future__ import annotations

import asyncio
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from potstill.pipelines.engines.rate_limit import (
    Limits, RateLimiter, TokenBucket, backoff_s, per_replica_limits, retry_after_s,
)
from potstill.schemas.generation import ApiConfig


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def _limiter(clock: FakeClock, **limits) -> RateLimiter:
    return RateLimiter(Limits(**{"max_concurrency": 1000, **limits}), clock=clock, sleep=clock.sleep)


def _grant_times(limiter: RateLimiter, clock: FakeClock, count: int, tokens: float = 0.0, used=None) -> list[float]:
    times: list[float] = []

    async def one():
        async with limiter.request(tokens) as permit:
            times.append(clock())
            if used is not None:
                permit.settle(used)

    async def main():
        await asyncio.gather(*(one() for _ in range(count)))

    asyncio.run(main())
    return times


def _max_in_window(times: list[float], window: float) -> int:
    """Most requests in any half-open window [t, t + window)."""
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


def test_requests_are_spaced_so_no_minute_holds_more_than_the_budget():
    clock = FakeClock()
    times = _grant_times(_limiter(clock, requests_per_minute=120), clock, 300)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) == pytest.approx(0.5)  # 60 / 120 s apart: an even stream, no burst
    assert _max_in_window(times, 60.0) == 120
    assert _max_in_window(times, 10.0) == 20
    assert times[-1] - times[0] == pytest.approx(299 * 0.5)  # and no slower than the budget


def test_tokens_per_minute_reserves_the_expected_tokens_and_settles_with_the_real_ones():
    clock = FakeClock()
    # 6000 TPM = 100 tokens/s; each request expects 100 tokens but really uses 300: the debt slows the next ones.
    times = _grant_times(_limiter(clock, tokens_per_minute=6000), clock, 20, tokens=100, used=300)
    span = times[-1] - times[0]
    assert 19 * 300 / 100 * 0.9 <= span <= 19 * 300 / 100 * 1.1
    clock2 = FakeClock()
    times = _grant_times(_limiter(clock2, tokens_per_minute=6000), clock2, 20, tokens=100, used=100)
    assert times[-1] - times[0] == pytest.approx(19 * 1.0)


def test_a_request_larger_than_the_bucket_waits_for_a_full_bucket_and_leaves_debt():
    bucket = TokenBucket(rate=10, capacity=10, now=0)
    assert bucket.wait_s(50, 0) == 0  # full: a big request may go (min(cost, capacity))
    bucket.take(50, 0)
    assert bucket.wait_s(1, 0) == pytest.approx(4.1)  # 40 of debt plus one token at 10/s
    bucket.give_back(45, 0)  # the request used 5: refund
    assert bucket.level == pytest.approx(5)


def test_a_429_hold_pauses_every_new_request():
    clock = FakeClock()
    limiter = _limiter(clock, requests_per_minute=600)
    limiter.hold(3.0)
    times = _grant_times(limiter, clock, 3)
    assert times[0] == pytest.approx(1003.0)
    assert times[1] - times[0] == pytest.approx(0.1)


def test_concurrency_caps_requests_in_flight():
    in_flight, peak = 0, 0

    async def main():
        limiter = RateLimiter(Limits(max_concurrency=3))

        async def one():
            nonlocal in_flight, peak
            async with limiter.request(0):
                in_flight += 1
                peak = max(peak, in_flight)
                await asyncio.sleep(0.01)
                in_flight -= 1

        await asyncio.gather(*(one() for _ in range(20)))

    asyncio.run(main())
    assert peak == 3


def test_replicas_share_the_endpoint_budgets_equally():
    api = ApiConfig(base_url="http://x/v1", max_concurrency=10, requests_per_minute=500, tokens_per_minute=90_000)
    limits = per_replica_limits(api, 4)
    assert limits == Limits(max_concurrency=2, requests_per_minute=125, tokens_per_minute=22_500)
    assert per_replica_limits(api, 20).max_concurrency == 1
    assert per_replica_limits(ApiConfig(base_url="http://x/v1"), 1).requests_per_minute is None


def test_retry_after_in_milliseconds_seconds_or_an_http_date():
    assert retry_after_s({"retry-after-ms": "250"}) == pytest.approx(0.25)
    assert retry_after_s({"Retry-After": "2"}) == 2.0
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    date = format_datetime(when + timedelta(seconds=30), usegmt=True)
    assert retry_after_s({"retry-after": date}, now_epoch=when.timestamp()) == pytest.approx(30)
    assert retry_after_s({}) is None and retry_after_s({"retry-after": "soon"}) is None


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    assert backoff_s(0, 0.0) == 0.25 and backoff_s(0, 0.999) < 0.5
    assert backoff_s(3, 1.0) == pytest.approx(4.0)
    assert backoff_s(20, 1.0) == 30.0
