"""What a generation run cost, charged to the samples it produced (pure: no Ray, no clock of its own).

    ledger = CostLedger(Prices.of(cfg))
    ledger.replica_added("replica-1", gpus=1, cpus=4, now=t0); ledger.replica_ready("replica-1", t1)
    ledger.credit("replica-1", commit.stats)           # each unit result, by the replica that produced it
    ledger.replica_ended("replica-1", t2, usage)       # usage: the replica's engine totals, lost work included
    report = ledger.report(now, generation_s=..., elapsed_s=..., prompts_done=...)

Self-hosted replicas are charged for their whole life (creation to end:
engine start and idle time included) at `replicas.price` per GPU-hour and
CPU-hour; an API teacher's tokens at `teacher.api.price`. Each replica's time
cost is split over the samples it produced in proportion to their completion
tokens; token costs are the samples' own tokens, each sample carrying an equal
share of its prompt's tokens. Work whose result never reached the controller
(a unit lost with its replica, the replica's start, a replica that produced
nothing) is `failed`. Rejection sampling's re-asks (every request of a
prompt after its first) are priced apart: their cost over the traces they
added is its marginal cost per trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from potstill.schemas.generation import GenerationConfig
from potstill.schemas.manifest import ShardStats
from potstill.schemas.report import CostReport, CostSplit, ReplicaReport


@dataclass(frozen=True)
class Prices:
    """The prices a run is charged at (all zero: nothing is priced, every cost is 0)."""

    usd_per_gpu_hour: float = 0.0
    usd_per_cpu_hour: float = 0.0
    input_usd_per_million: float = 0.0
    output_usd_per_million: float = 0.0

    @classmethod
    def of(cls, cfg: GenerationConfig) -> "Prices":
        api = cfg.teacher.api
        return cls(cfg.replicas.price.usd_per_gpu_hour, cfg.replicas.price.usd_per_cpu_hour,
                   api.price.input_usd_per_million if api else 0.0, api.price.output_usd_per_million if api else 0.0)

    def tokens_usd(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input_usd_per_million + completion_tokens * self.output_usd_per_million) / 1e6

    def hourly_usd(self, gpus: float, cpus: float) -> float:
        return gpus * self.usd_per_gpu_hour + cpus * self.usd_per_cpu_hour

    @property
    def priced(self) -> bool:
        return any((self.usd_per_gpu_hour, self.usd_per_cpu_hour, self.input_usd_per_million, self.output_usd_per_million))


@dataclass
class ReplicaAccount:
    """One replica's life and the samples credited to it."""

    name: str
    gpus: float
    cpus: float
    created_at: float
    ready_at: float | None = None
    ended_at: float | None = None
    credited: ShardStats = field(default_factory=ShardStats)
    engine_prompt_tokens: int = 0  # what its engine processed, lost work included (as last reported)
    engine_completion_tokens: int = 0

    def lifetime_s(self, now: float) -> float:
        return max(0.0, (self.ended_at if self.ended_at is not None else now) - self.created_at)

    def working_s(self, now: float) -> float:
        if self.ready_at is None:
            return 0.0
        return max(0.0, (self.ended_at if self.ended_at is not None else now) - self.ready_at)

    def lost_tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens its engine processed whose samples were never credited."""
        c = self.credited
        return (max(0, self.engine_prompt_tokens - c.prompt_tokens), max(0, self.engine_completion_tokens - c.completion_tokens))

    def charge(self, prices: Prices, now: float) -> tuple[CostSplit, float]:
        """Its cost split over the kinds of samples it produced, and the part rejection sampling's re-asks cost."""
        c = self.credited
        lost_prompt, lost_completion = self.lost_tokens()
        rejected_tokens = c.completion_tokens - c.accepted_tokens - c.truncated_tokens
        rejected_samples = c.samples_drawn - c.accepted_samples - c.truncated_samples
        # Token prices: each kind's own completion tokens plus its samples' share of the prompt tokens.
        prompt_per_sample = c.prompt_tokens / c.samples_drawn if c.samples_drawn else 0.0
        split = CostSplit(
            accepted=prices.tokens_usd(prompt_per_sample * c.accepted_samples, c.accepted_tokens),
            rejected=prices.tokens_usd(prompt_per_sample * rejected_samples, rejected_tokens),
            truncated=prices.tokens_usd(prompt_per_sample * c.truncated_samples, c.truncated_tokens),
            failed=prices.tokens_usd(lost_prompt + (0 if c.samples_drawn else c.prompt_tokens), lost_completion),
        )
        resampling = prices.tokens_usd(c.resampled_prompt_tokens, c.resampled_completion_tokens)
        # Replica time: split over the samples' completion tokens (the work that took the time).
        time_usd = prices.hourly_usd(self.gpus, self.cpus) * self.lifetime_s(now) / 3600.0
        if time_usd:
            tokens = c.completion_tokens + lost_completion
            if tokens:
                split = split + CostSplit(accepted=time_usd * c.accepted_tokens / tokens,
                                          rejected=time_usd * rejected_tokens / tokens,
                                          truncated=time_usd * c.truncated_tokens / tokens,
                                          failed=time_usd * lost_completion / tokens)
                resampling += time_usd * c.resampled_completion_tokens / tokens
            else:
                split = split + CostSplit(failed=time_usd)
        return split, resampling


class CostLedger:
    """Every replica of one invocation and what it is charged.

    `spent_usd(now)` runs on every pass of the controller's loop, over pools of up to thousands of replicas, so the
    ledger keeps its parts as running sums (token costs, ended replicas' time, the live replicas' rate) instead of
    walking every replica each time; `report` walks them once, at the end.
    """

    def __init__(self, prices: Prices):
        self.prices = prices
        self.replicas: dict[str, ReplicaAccount] = {}
        self._tokens_usd = 0.0  # every replica's tokens: max(engine totals, credited), priced
        self._ended_time_usd = 0.0  # replica time of the replicas that have ended
        self._live_usd_per_s = 0.0  # the live replicas' summed rate ...
        self._live_started_usd = 0.0  # ... and the sum of rate x creation time, so their time is rate x now - this
        self._origin: float | None = None  # times count from the first replica's creation (clock times lose digits)

    def replica_added(self, name: str, gpus: float, cpus: float, now: float) -> None:
        """A new replica; names are unique within an invocation (the pools number their replicas)."""
        self.replicas[name] = account = ReplicaAccount(name, gpus, cpus, now)
        self._live_changed(account, +1)

    def replica_ready(self, name: str, now: float) -> None:
        account = self.replicas.get(name)
        if account is not None and account.ready_at is None:
            account.ready_at = now

    def engine_usage(self, name: str, prompt_tokens: int, completion_tokens: int) -> None:
        """The replica's running totals of what its engine processed (they only grow)."""
        account = self.replicas.get(name)
        if account is not None:
            before = self._account_tokens_usd(account)
            account.engine_prompt_tokens = max(account.engine_prompt_tokens, prompt_tokens)
            account.engine_completion_tokens = max(account.engine_completion_tokens, completion_tokens)
            self._tokens_usd += self._account_tokens_usd(account) - before

    def replica_ended(self, name: str, now: float) -> None:
        account = self.replicas.get(name)
        if account is not None and account.ended_at is None:
            account.ended_at = now
            self._live_changed(account, -1)
            self._ended_time_usd += self._usd_per_s(account) * account.lifetime_s(now)

    def credit(self, name: str, stats: ShardStats) -> None:
        """Samples (a unit's or a sub-unit's result) that replica `name` produced."""
        account = self.replicas.get(name)
        if account is not None:
            before = self._account_tokens_usd(account)
            account.credited = account.credited + stats
            self._tokens_usd += self._account_tokens_usd(account) - before

    def spent_usd(self, now: float) -> float:
        """Charged so far: replica time up to `now`, and every token known to have been processed."""
        live_time_usd = 0.0 if self._origin is None else self._live_usd_per_s * (now - self._origin) - self._live_started_usd
        return self._tokens_usd + self._ended_time_usd + max(0.0, live_time_usd)

    def _usd_per_s(self, account: ReplicaAccount) -> float:
        return self.prices.hourly_usd(account.gpus, account.cpus) / 3600.0

    def _live_changed(self, account: ReplicaAccount, sign: int) -> None:
        if self._origin is None:
            self._origin = account.created_at
        rate = self._usd_per_s(account)
        self._live_usd_per_s += sign * rate
        self._live_started_usd += sign * rate * (account.created_at - self._origin)

    def _account_tokens_usd(self, account: ReplicaAccount) -> float:
        c = account.credited
        return self.prices.tokens_usd(max(account.engine_prompt_tokens, c.prompt_tokens),
                                      max(account.engine_completion_tokens, c.completion_tokens))

    def report(self, now: float, *, generation_s: float, elapsed_s: float, prompts_done: int) -> CostReport:
        split, resampling = CostSplit(), 0.0
        credited = ShardStats()
        replicas = []
        gpu_hours = cpu_hours = 0.0
        for a in self.replicas.values():
            a_split, a_resampling = a.charge(self.prices, now)
            split, resampling = split + a_split, resampling + a_resampling
            credited = credited + a.credited
            lifetime = a.lifetime_s(now)
            gpu_hours += a.gpus * lifetime / 3600.0
            cpu_hours += a.cpus * lifetime / 3600.0
            working = a.working_s(now)
            replicas.append(ReplicaReport(
                name=a.name, gpus=a.gpus, cpus=a.cpus, lifetime_s=lifetime, working_s=working,
                completion_tokens=a.credited.completion_tokens,
                engine_completion_tokens=max(a.engine_completion_tokens, a.credited.completion_tokens),
                tokens_per_s=a.credited.completion_tokens / working if working > 0 else 0.0, usd=a_split.total))
        lost_prompt = sum(a.lost_tokens()[0] for a in self.replicas.values())
        lost_completion = sum(a.lost_tokens()[1] for a in self.replicas.values())
        report = CostReport(
            elapsed_s=elapsed_s, generation_s=generation_s, prompts_done=prompts_done,
            samples_drawn=credited.samples_drawn, accepted_traces=credited.accepted_samples,
            accepted_tokens=credited.accepted_tokens, prompt_tokens=credited.prompt_tokens + lost_prompt,
            completion_tokens=credited.completion_tokens + lost_completion, gpu_hours=gpu_hours, cpu_hours=cpu_hours,
            usd_total=split.total, usd_by_kind=split, resampled_samples=credited.resampled_samples,
            resampled_accepted=credited.resampled_accepted, resampling_usd=resampling, replicas=replicas)
        return with_ratios(report)


def with_ratios(report: CostReport) -> CostReport:
    """`report` with its derived figures (per trace, per token, per second) computed from its sums."""
    r = report.model_copy()
    r.tokens_per_s = r.completion_tokens / r.generation_s if r.generation_s > 0 else 0.0
    r.usd_per_accepted_trace = r.usd_total / r.accepted_traces if r.accepted_traces else None
    r.usd_per_million_accepted_tokens = r.usd_total / r.accepted_tokens * 1e6 if r.accepted_tokens else None
    r.marginal_usd_per_resampled_trace = r.resampling_usd / r.resampled_accepted if r.resampled_accepted else None
    first_round = r.accepted_traces - r.resampled_accepted
    r.first_round_usd_per_trace = ((r.usd_total - r.resampling_usd - r.usd_by_kind.failed) / first_round
                                   if first_round > 0 else None)
    return r


_SUMMED = ("elapsed_s", "generation_s", "prompts_done", "samples_drawn", "accepted_traces", "accepted_tokens",
           "prompt_tokens", "completion_tokens", "gpu_hours", "cpu_hours", "usd_total", "resampled_samples",
           "resampled_accepted", "resampling_usd")


def combine(reports: list[CostReport]) -> CostReport:
    """Several invocations' reports as one (sums, with the ratios recomputed; no per-replica detail)."""
    total = CostReport()
    for r in reports:
        for name in _SUMMED:
            setattr(total, name, getattr(total, name) + getattr(r, name))
        total.usd_by_kind = total.usd_by_kind + r.usd_by_kind
    return with_ratios(total)
