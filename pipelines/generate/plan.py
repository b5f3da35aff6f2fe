"""Plan a run: partition validated prompts into deterministic work units.

A unit is `prompts_per_shard` consecutive prompts (input order, after dedup)
and becomes exactly one shard. Its `shard_id` is its index plus a hash of its
prompt ids, so the same input and config always give the same shards, and a
re-run can skip the ones already committed. The plan's `plan_hash` covers
every prompt's id, reference and token budget and the partition: it is
recorded in `run.json` and every commit, so a run whose prompts file changed
under it is refused instead of mixing two plans.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from potstill.schemas.prompt import PromptRecord


@dataclass
class WorkUnit:
    """One shard's worth of prompts."""

    run_id: str
    shard_id: str
    index: int
    prompts: list[PromptRecord]
    plan_hash: str | None = None  # the plan the unit belongs to (checked against run.json before its commit)

    @property
    def prompt_ids(self) -> list[str]:
        return [p.prompt_id for p in self.prompts]


@dataclass
class RunPlan:
    """What a run will produce: shard ids in order and how many prompts each holds."""

    run_id: str
    shard_ids: list[str] = field(default_factory=list)
    shard_sizes: list[int] = field(default_factory=list)
    plan_hash: str = ""

    @property
    def total_prompts(self) -> int:
        return sum(self.shard_sizes)


def shard_id_for(index: int, prompt_ids: list[str]) -> str:
    """Deterministic shard id: zero-padded index (sorts in plan order) + content hash."""
    digest = hashlib.sha256("\n".join(prompt_ids).encode()).hexdigest()[:12]
    return f"{index:06d}-{digest}"


def iter_units(prompts: Iterable[PromptRecord], run_id: str, prompts_per_shard: int,
               plan_hash: str | None = None) -> Iterator[WorkUnit]:
    """Stream work units (stamped with `plan_hash`); holds at most one unit of prompts in memory."""
    batch: list[PromptRecord] = []
    index = 0
    for prompt in prompts:
        batch.append(prompt)
        if len(batch) == prompts_per_shard:
            yield WorkUnit(run_id, shard_id_for(index, [p.prompt_id for p in batch]), index, batch, plan_hash)
            batch, index = [], index + 1
    if batch:
        yield WorkUnit(run_id, shard_id_for(index, [p.prompt_id for p in batch]), index, batch, plan_hash)


def _plan_line(prompt: PromptRecord) -> bytes:
    """What of a prompt decides its traces, besides the config: its id, reference and token budget."""
    return json.dumps([prompt.prompt_id, prompt.reference, prompt.max_tokens]).encode() + b"\n"


def plan_run(prompts: Iterable[PromptRecord], run_id: str, prompts_per_shard: int) -> RunPlan:
    """A first pass over the prompts that keeps only shard ids, sizes and the plan hash (bounded memory)."""
    plan = RunPlan(run_id)
    digest = hashlib.sha256(f"prompts_per_shard={prompts_per_shard}\n".encode())
    for unit in iter_units(prompts, run_id, prompts_per_shard):
        plan.shard_ids.append(unit.shard_id)
        plan.shard_sizes.append(len(unit.prompts))
        for prompt in unit.prompts:
            digest.update(_plan_line(prompt))
    plan.plan_hash = digest.hexdigest()
    return plan
