"""Build real run output roots for reader/export tests: shards written, verified and committed by the commit
protocol itself (`write_shard`, `commit_shard`, `finalize_run`), plus an uncommitted attempt like a killed writer leaves.

    root = make_run(tmp_path / "r1", "r1", prompts=6, n=2)            # finished, 3 shards, a killed attempt in data/
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from potstill.pipelines.output.commit import commit_shard, finalize_run
from potstill.pipelines.output.shard_writer import write_shard
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import StorageConfig
from potstill.schemas.manifest import ShardStats
from potstill.schemas.prompt import prompt_id_of

UNCOMMITTED = "UNCOMMITTED ATTEMPT"
"""Text of every row of the killed attempt: it must never appear in anything a reader returns."""


def question(i: int) -> str:
    a, b = 100 + 37 * i, 200 + 53 * i
    return f"What is {a} + {b}?"


def trace(run_id: str, shard_id: str, i: int, sample: int, *, verified: bool | None = True, finish: str = "stop",
          completion_tokens: int = 30, text: str | None = None, system: str | None = None) -> dict:
    a, b = 100 + 37 * i, 200 + 53 * i
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question(i)}]
    reasoning = f"{a % 10}+{b % 10}=.. carry\nsample {sample}"
    completion = text if text is not None else f"<think>\n{reasoning}\n</think>\n{a + b}"
    return {
        "run_id": run_id, "shard_id": shard_id, "prompt_id": prompt_id_of(messages), "sample_index": sample,
        "messages": messages, "reference": str(a + b), "completion": completion,
        "reasoning": None if text is not None else reasoning, "answer": str(a + b) if text is None else text,
        "finish_reason": finish, "prompt_tokens": 12, "completion_tokens": completion_tokens,
        "completion_token_ids": list(range(3)), "topk_ids": [[1, 2]] * 3, "topk_logprobs": [[-0.1, -2.0]] * 3,
        "verified": verified, "verifier": "math" if verified is not None else "none", "teacher_model": "tiny-teacher",
        "teacher_revision": "rev-1", "sampling": '{"n": 2, "temperature": 0.6}',
        "created_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }


def default_verdict(i: int, sample: int) -> bool:
    return not (i % 3 == 1 and sample == 1)  # every third prompt has one rejected sample


def commit_rows(store: Storage, run_id: str, shard_id: str, rows: list[dict]) -> None:
    written = write_shard(store, run_id, shard_id, rows, "zstd", 3)
    prompt_ids = list(dict.fromkeys(r["prompt_id"] for r in rows))
    stats = ShardStats(prompts=len(prompt_ids), traces=len(rows), verified=sum(r["verified"] is True for r in rows),
                       rejected=sum(r["verified"] is False for r in rows), samples_drawn=len(rows),
                       completion_tokens=sum(r["completion_tokens"] for r in rows))
    commit_shard(store, written, run_id, shard_id, prompt_ids, [], stats)


def make_run(root: str | Path, run_id: str, prompts: int = 6, n: int = 2, per_shard: int = 2, *, finalize: bool = True,
             killed_attempt: bool = True, first_prompt: int = 0, verdict=default_verdict,
             storage: StorageConfig | None = None, **trace_kwargs) -> str:
    """A run root (a folder, or s3:// with `storage`) with ceil(prompts/per_shard) committed shards of `n` samples
    per prompt; returns its URI."""
    store = Storage(str(root), storage)
    shard_ids = []
    for s, start in enumerate(range(first_prompt, first_prompt + prompts, per_shard)):
        shard_id = f"{s:06d}-{run_id}"
        rows = [trace(run_id, shard_id, i, k, verified=verdict(i, k), **trace_kwargs)
                for i in range(start, min(start + per_shard, first_prompt + prompts)) for k in range(n)]
        commit_rows(store, run_id, shard_id, rows)
        shard_ids.append(shard_id)
    if killed_attempt:  # written and verified, never committed: what a writer killed before its commit leaves
        rows = [trace(run_id, shard_ids[0], 900 + k, 0, text=UNCOMMITTED) for k in range(3)]
        write_shard(store, run_id, shard_ids[0], rows, "zstd", 3)
    if finalize:
        finalize_run(store, run_id, f"fp-{run_id}", "tiny-teacher", "rev-1", shard_ids)
    return store.uri
