"""Who is blamed for a failure, and what runs next: the controller's failure policy (pure, no Ray).

    policy = FailurePolicy(max_attempts=3, split_into=2)
    verdict = policy.on_failure(entry, "EngineFailure: ...", broken=True, alone=False)

When a replica dies (actor death, `EngineFailure`, hang), every unit on it is
a suspect but only one may be the poison, so suspects re-run alone
(`exclusive`) and only a failure while alone is blamed. A unit whose own task
raised is blamed directly. A unit blamed `max_attempts` times (the fault may
have been transient) is split into `split_into` sub-units that run alone; a
sub-unit that breaks its engine alone holds the poison and is split again at
once (bisection). The poison ends up alone: blamed `max_attempts` times, it is
recorded as failed, and every other prompt of its shard completes. Sub-unit results come back to the
controller and are merged (`Split.add`) into the shard's one commit, rows in
the order the whole unit would have written them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from potstill.pipelines.generate.plan import WorkUnit
from potstill.pipelines.generate.reasons import failure_reason
from potstill.pipelines.generate.unit_runner import UnitResult
from potstill.schemas.manifest import FailedPrompt, ShardStats


@dataclass
class Split:
    """A shard whose unit was split: its sub-units' results, collected until none is pending."""

    unit: WorkUnit
    pending: int = 0
    parts: list[UnitResult] = field(default_factory=list)

    def add(self, result: UnitResult) -> UnitResult | None:
        """Record one sub-unit's result; the merged shard result once the last one is in."""
        self.parts.append(result)
        self.pending -= 1
        if self.pending > 0:
            return None
        return merge_results(self.unit, self.parts)


@dataclass
class Entry:
    """A unit (or sub-unit) waiting for, or running on, a replica."""

    unit: WorkUnit
    attempts: int = 0  # failures blamed on it
    exclusive: bool = False  # must run alone on a replica
    split: Split | None = None  # set for sub-units: where their result goes

    @property
    def is_part(self) -> bool:
        return self.split is not None


@dataclass
class Verdict:
    """What to do after a failure: entries to queue, or a prompt given up on."""

    requeue: list[Entry] = field(default_factory=list)
    gave_up: UnitResult | None = None  # the failed prompt(s), to record in the shard
    blamed: bool = False
    split: bool = False


def split_unit(unit: WorkUnit, parts: int) -> list[WorkUnit]:
    """`unit`'s prompts in up to `parts` contiguous, near-equal sub-units (same shard id and index)."""
    n = len(unit.prompts)
    parts = max(1, min(parts, n))
    bounds = [i * n // parts for i in range(parts + 1)]
    return [WorkUnit(unit.run_id, unit.shard_id, unit.index, unit.prompts[a:b]) for a, b in zip(bounds, bounds[1:])]


def merge_results(unit: WorkUnit, parts: list[UnitResult]) -> UnitResult:
    """One shard result from its sub-units': rows by (prompt's plan position, sample_index), failures in plan order."""
    order = {pid: i for i, pid in enumerate(unit.prompt_ids)}
    rows = sorted((r for p in parts for r in p.rows), key=lambda r: (order[r["prompt_id"]], r["sample_index"]))
    failed = sorted((f for p in parts for f in p.failed), key=lambda f: order[f.prompt_id])
    stats = sum((p.stats for p in parts), ShardStats())
    if stats.prompts != len(unit.prompts):
        raise ValueError(f"shard {unit.shard_id}: sub-units cover {stats.prompts} prompts, the unit has "
                         f"{len(unit.prompts)}; a sub-unit result was lost or counted twice")
    return UnitResult(rows=rows, failed=failed, stats=stats)


def gave_up_result(unit: WorkUnit, reason: str, attempts: int) -> UnitResult:
    """The result of a unit whose prompts are recorded as failed: no rows, one FailedPrompt each."""
    failed = [FailedPrompt(prompt_id=p.prompt_id, reason=failure_reason(reason), attempts=attempts) for p in unit.prompts]
    return UnitResult(failed=failed, stats=ShardStats(prompts=len(unit.prompts), failed_prompts=len(failed)))


class FailurePolicy:
    """Decides retries, splits and give-ups; bounded: a prompt is blamed at most `max_attempts` times."""

    def __init__(self, max_attempts: int, split_into: int):
        if max_attempts < 1 or split_into < 2:
            raise ValueError(f"max_attempts={max_attempts} must be >= 1 and split_into={split_into} >= 2")
        self.max_attempts = max_attempts
        self.split_into = split_into

    def on_failure(self, entry: Entry, reason: str, *, broken: bool, alone: bool) -> Verdict:
        """`broken`: the replica died or its engine broke; `alone`: the entry had the engine to itself.

        A task error (not `broken`) is the entry's own, so it is always blamed.
        """
        if broken and not alone:
            return Verdict(requeue=[replace(entry, exclusive=True)])  # a suspect: re-run alone, not blamed
        attempts = entry.attempts + 1
        several = len(entry.unit.prompts) > 1
        if several and (attempts >= self.max_attempts or (broken and entry.is_part)):
            # The unit keeps failing, or a part of a unit known to hold the poison broke its engine.
            split = entry.split or Split(entry.unit)
            parts = split_unit(entry.unit, self.split_into)
            split.pending += len(parts) - (1 if entry.split else 0)
            requeue = [Entry(p, 0, exclusive=broken, split=split) for p in parts]
            return Verdict(requeue=requeue, blamed=True, split=True)
        if attempts < self.max_attempts:
            return Verdict(requeue=[replace(entry, attempts=attempts, exclusive=broken)], blamed=True)
        return Verdict(gave_up=gave_up_result(entry.unit, reason, attempts), blamed=True)
