"""Summarize a run's output: totals, accepted fraction, token statistics, a sample trace.

    potstill inspect runs/<run_id> [--json]

Reads only what the manifest (or, for a live run, the commits) lists.
"""

from __future__ import annotations

from typing import Any

from potstill.pipelines.output.commit import read_commits
from potstill.pipelines.output.storage import Storage
from potstill.schemas.manifest import ShardStats
from potstill.schemas.generation import StorageConfig


def _percentiles(values: list[int], qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"p{int(q * 100)}": float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) for q in qs}
    out["mean"] = sum(ordered) / len(ordered)
    out["max"] = float(ordered[-1])
    return out


def inspect_run(uri: str, storage_cfg: StorageConfig | None = None) -> dict[str, Any]:
    """Everything `potstill inspect` prints, as a dict."""
    storage = Storage(uri, storage_cfg or StorageConfig())
    finished = storage.exists("_SUCCESS") and storage.exists("manifest.json")
    commits = read_commits(storage)
    if not commits:
        raise FileNotFoundError(f"{uri}: no committed shard (no commits/*.json); is this a potstill run output root?")
    ordered = [commits[k] for k in sorted(commits)]
    totals = sum((c.stats for c in ordered), ShardStats())
    tokens: list[int] = []
    sample: dict[str, Any] | None = None
    for c in ordered:
        if c.row_count == 0:
            continue
        table = storage.read_table(c.data_path, columns=["completion_tokens"] if sample else None)
        tokens.extend(table.column("completion_tokens").to_pylist())
        if sample is None:
            row = table.slice(0, 1).to_pylist()[0]
            sample = {k: row[k] for k in ("prompt_id", "sample_index", "messages", "completion", "answer",
                                          "reference", "verified", "finish_reason", "completion_tokens")}
    judged = totals.verified + totals.rejected
    return {
        "uri": uri, "run_id": ordered[0].run_id, "finished": finished, "shards": len(ordered),
        "totals": totals.model_dump(), "accepted_fraction": totals.verified / judged if judged else None,
        "failed_prompts": sum(len(c.failed) for c in ordered),
        "completion_tokens": _percentiles(tokens), "sample": sample,
    }
