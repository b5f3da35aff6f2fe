"""Client-side budgets of an API teacher: concurrency, requests per minute, tokens per minute, 429 cool-down.

    limiter = RateLimiter(per_replica_limits(cfg.teacher.api, cfg.replicas.max_replicas))
    async with limiter.request(expected_tokens) as permit:    # waits for every budget
        response = await post(...)
        permit.settle(response_tokens)                        # or limiter.hold(retry_after_s) on a 429

Requests per minute: requests are spaced `60 / rpm` seconds apart (a token
bucket that holds one request), so no window of 60 seconds ever holds more
than `rpm` of them, and providers that enforce their limit per second (as
OpenAI does) see an even stream instead of a burst. Tokens per minute: a
bucket refilled at `tpm / 60` tokens a second holding one second's worth; a
request waits until the bucket holds its expected tokens (or is full, for a
request larger than that), takes them, and settles with the tokens the
server reports, so the bucket may run into debt that later requests wait out.
A 429 holds every new request until its Retry-After has passed (the limit is
the key's, not the request's). Every HTTP attempt passes here, retries
included: providers count them too.

The clock and sleep are injectable, so the unit tests run on a fake clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potstill.schemas.generation import ApiConfig

_EPS = 1e-9
MAX_RETRY_AFTER_S = 600.0
"""Longest server-requested wait honoured; a larger Retry-After is treated as this."""


@dataclass(frozen=True)
class Limits:
    """One replica's share of the endpoint's budgets (None: unlimited)."""

    max_concurrency: int
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


def per_replica_limits(api: ApiConfig, max_replicas: int) -> Limits:
    """Each of up to `max_replicas` replicas gets an equal share, so together they stay within the totals."""
    share = max(1, max_replicas)
    return Limits(
        max_concurrency=max(1, api.max_concurrency // share),
        requests_per_minute=api.requests_per_minute / share if api.requests_per_minute else None,
        tokens_per_minute=api.tokens_per_minute / share if api.tokens_per_minute else None,
    )


class TokenBucket:
    """Refills `rate` units a second up to `capacity`; a take may leave it below zero (debt)."""

    def __init__(self, rate: float, capacity: float, now: float):
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"rate ({rate}) and capacity ({capacity}) must be positive")
        self.rate, self.capacity = rate, capacity
        self.level, self.updated = capacity, now

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_s(self, cost: float, now: float) -> float:
        """Seconds until the bucket holds `cost` (or is full, for a cost above its capacity)."""
        self._refill(now)
        deficit = min(cost, self.capacity) - self.level
        return deficit / self.rate if deficit > _EPS else 0.0

    def take(self, cost: float, now: float) -> None:
        self._refill(now)
        self.level -= cost

    def give_back(self, amount: float, now: float) -> None:
        """Return unused units (never above capacity); a negative amount takes more."""
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)


class Permit:
    """One granted request: settle it with the tokens it really used (None keeps the reservation)."""

    def __init__(self, reserved: float):
        self.reserved = reserved
        self.used: float | None = None

    def settle(self, used: float) -> None:
        self.used = used


class RateLimiter:
    """Concurrency, RPM and TPM budgets and the 429 hold, shared by every request of one engine."""

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.limits = limits
        self._clock, self._sleep = clock, sleep
        now = clock()
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self._requests = TokenBucket(rpm / 60.0, 1.0, now) if rpm else None
        self._tokens = TokenBucket(tpm / 60.0, tpm / 60.0, now) if tpm else None
        self._held_until = now
        self._slots: asyncio.Semaphore | None = None
        self._pacing: asyncio.Lock | None = None
        self.granted = 0
        self.waited_s = 0.0

    def hold(self, seconds: float) -> None:
        """No request starts in the next `seconds` (a 429's Retry-After)."""
        self._held_until = max(self._held_until, self._clock() + min(seconds, MAX_RETRY_AFTER_S))

    def _wait_s(self, tokens: float, now: float) -> float:
        wait = self._held_until - now
        if self._requests is not None:
            wait = max(wait, self._requests.wait_s(1.0, now))
        if self._tokens is not None:
            wait = max(wait, self._tokens.wait_s(tokens, now))
        return wait

    async def _admit(self, tokens: float) -> None:
        """Wait (first come, first served) until every budget allows one more request, then charge it."""
        if self._pacing is None:
            self._pacing = asyncio.Lock()
        async with self._pacing:
            started = self._clock()
            while True:
                now = self._clock()
                wait = self._wait_s(tokens, now)
                if wait <= _EPS:
                    break
                await self._sleep(wait)
            if self._requests is not None:
                self._requests.take(1.0, now)
            if self._tokens is not None:
                self._tokens.take(tokens, now)
            self.granted += 1
            self.waited_s += now - started

    @asynccontextmanager
    async def request(self, expected_tokens: float) -> AsyncIterator[Permit]:
        """Hold one of the concurrent slots and pass the rate budgets for one HTTP attempt."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.max_concurrency)
        async with self._slots:
            await self._admit(expected_tokens)
            permit = Permit(expected_tokens)
            try:
                yield permit
            finally:
                if self._tokens is not None and permit.used is not None:
                    self._tokens.give_back(permit.reserved - permit.used, self._clock())


def retry_after_s(headers: dict[str, str], now_epoch: float | None = None) -> float | None:
    """The wait a response asks for: `retry-after-ms`, or `retry-after` in seconds or as an HTTP date; None if absent."""
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now_epoch is None else now_epoch))


def backoff_s(attempt: int, jitter: float, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Exponential backoff for retry `attempt` (0-based) with `jitter` in [0, 1): half to all of the step."""
    step = min(cap_s, base_s * math.pow(2, attempt))
    return step * (0.5 + 0.5 * jitter)
