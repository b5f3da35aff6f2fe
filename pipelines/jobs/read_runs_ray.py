"""Committed runs as a Ray Dataset: `potstill.read_run(...).to_ray()`.

    ds = potstill.read_run(["runs/r1", "s3://bucket/r2"], endpoint_url=...).to_ray(columns=["messages", "completion"])

Reads exactly the committed files (`CommittedRuns.shards`) with
`ray.data.read_parquet`, the row filter pushed down as a Ray Data predicate
expression. s3:// runs are read through the project's retrying s3fs
filesystem (pickled to the Ray workers by reference), never a second S3
client. Ray starts through `ensure_ray()` when it is not running yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from potstill.pipelines.output.reader import CommittedRuns


def _ray_predicate(runs: "CommittedRuns") -> Any:
    from ray.data.expressions import col

    predicate = None
    if runs.row_filter.verified_only:
        predicate = col("verified") == True  # noqa: E712 - a Ray expression, not a Python comparison
    if runs.row_filter.finish_reasons:
        cond = col("finish_reason").is_in(list(runs.row_filter.finish_reasons))
        predicate = cond if predicate is None else predicate & cond
    return predicate


def runs_to_ray(runs: "CommittedRuns", columns: Sequence[str] | None = None) -> Any:
    """A lazy `ray.data.Dataset` of the rows of `runs` that pass its row filter."""
    import pyarrow.fs as pafs
    import ray.data

    from potstill.cluster.connect import ensure_ray

    runs.check_columns(columns)
    ensure_ray()
    read_columns = None if columns is None else list(dict.fromkeys([*columns, *runs.row_filter.columns]))
    parts = []
    for run in runs.runs:
        mine = [s for s in runs.shards if s.run_uri == run.uri]
        if not mine:
            continue
        store = runs.storage_for(mine[0])
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(store.fs)) if store.remote else None
        parts.append(ray.data.read_parquet([store.path(s.rel) for s in mine], filesystem=fs, columns=read_columns))
    if not parts:
        return ray.data.from_arrow(runs.to_table(columns))
    ds = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    predicate = _ray_predicate(runs)
    if predicate is not None:
        ds = ds.filter(expr=predicate)
    if columns is not None and read_columns != list(columns):
        ds = ds.select_columns(list(columns))
    return ds
