"""The replica count over time: one sample per change of the pool, for `potstill status` and the manifest.

    history = PoolHistory(started=pool.now())
    history.note("scale --replicas 2")                 # something changed; sampled at most once a second
    history.sample(now, target, replicas)              # called by the controller's loop
    history.samples                                    # [ReplicaCountSample, ...]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from potstill.pipelines.generate.replicas import Replica
from potstill.schemas.results import ReplicaCountSample

MAX_SAMPLES = 5_000  # beyond this, the oldest half is thinned to every other sample


class PoolHistory:
    """Samples of (target, ready, starting, pending, draining), taken only after a noted change."""

    def __init__(self, started: float, min_interval_s: float = 1.0):
        self.started = started
        self.min_interval_s = min_interval_s
        self.samples: list[ReplicaCountSample] = []
        self._reasons: list[str] = []
        self._last_t: float | None = None

    def note(self, reason: str) -> None:
        """The pool changed (`reason` says how); the next `sample` records it."""
        if reason and reason not in self._reasons:
            self._reasons.append(reason)
        elif not reason and not self._reasons:
            self._reasons.append("")

    def sample(self, now: float, target: int, replicas: Iterable[Replica], force: bool = False) -> None:
        """Record the pool if something was noted and the last sample is at least `min_interval_s` old."""
        if not self._reasons:
            return
        if not force and self._last_t is not None and now - self._last_t < self.min_interval_s:
            return
        counts = Counter(r.state for r in replicas)
        sample = ReplicaCountSample(
            t_s=round(now - self.started, 3), target=target, ready=counts["ready"], starting=counts["starting"],
            pending=counts["pending"], draining=counts["draining"], reason="; ".join(r for r in self._reasons if r))
        self._reasons.clear()
        self._last_t = now
        last = self.samples[-1] if self.samples else None
        if last is not None and last.model_dump(exclude={"t_s", "reason"}) == sample.model_dump(exclude={"t_s", "reason"}):
            return  # nothing visible changed
        self.samples.append(sample)
        if len(self.samples) > MAX_SAMPLES:
            half = len(self.samples) // 2
            self.samples = self.samples[:half:2] + self.samples[half:]

    @property
    def peak_ready(self) -> int:
        return max((s.ready for s in self.samples), default=0)
