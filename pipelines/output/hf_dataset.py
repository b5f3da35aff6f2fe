"""Committed runs as Hugging Face `datasets` objects: in memory, or streamed shard by shard.

    ds = potstill.read_run("runs/r1").to_hf()                  # datasets.Dataset
    it = potstill.read_run("s3://b/r1", endpoint_url=...).to_hf(streaming=True)   # datasets.IterableDataset

The streaming form is an `IterableDataset.from_generator` whose data sources
are the committed shards (one per shard, in `gen_kwargs`), so `datasets`
hands whole shards to DataLoader workers and to `split_dataset_by_node`
ranks. Each shard is read through the project's storage stack, never through
`datasets`' own fsspec/S3 clients. Needs the `export` extra (`datasets`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from potstill.schemas.generation import StorageConfig
from potstill.schemas.trace import trace_arrow_schema

if TYPE_CHECKING:
    from potstill.pipelines.output.reader import CommittedRuns

STREAM_ABOVE_BYTES = 2 * 2**30
"""`to_hf(streaming=None)` streams when the committed Parquet exceeds this (it decompresses to several times more)."""


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - the export extra is in the CPU lock
        raise ImportError("to_hf() needs Hugging Face `datasets`: pip install 'potstill[export]' "
                          "(or the pins in requirements/cpu.lock)") from exc
    return datasets


def hf_features(columns: Sequence[str] | None = None) -> Any:
    """`datasets.Features` of the trace rows (only `columns` when given)."""
    import pyarrow as pa

    datasets = _import_datasets()
    schema = trace_arrow_schema()
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    return datasets.Features.from_arrow_schema(schema)


def _shard_rows(shards: list[dict[str, Any]], storage: dict[str, Any], verified_only: bool,
                finish_reasons: tuple[str, ...] | None, columns: tuple[str, ...] | None) -> Iterator[dict[str, Any]]:
    """The generator behind the IterableDataset: rows of `shards`, one shard in memory at a time.

    Takes only plain data (datasets pickles it into DataLoader workers). Only
    `shards` is a list: `datasets` splits every list argument into data
    sources, so the others are tuples.
    """
    from potstill.pipelines.output.reader import CommittedRuns, CommittedShard, RowFilter

    runs = CommittedRuns([], [], RowFilter(verified_only, finish_reasons or None), StorageConfig.model_validate(storage))
    for spec in shards:
        table = runs.read_shard(CommittedShard(**spec), columns)
        for batch in table.to_batches(max_chunksize=1024):
            yield from batch.to_pylist()


def to_hf_dataset(runs: "CommittedRuns", streaming: bool | None = None, columns: Sequence[str] | None = None) -> Any:
    """See `CommittedRuns.to_hf`."""
    runs.check_columns(columns)
    datasets = _import_datasets()
    columns = list(columns) if columns is not None else None
    if streaming is None:
        streaming = runs.committed_bytes > STREAM_ABOVE_BYTES
    features = hf_features(columns)
    if not streaming:
        return datasets.Dataset(runs.to_table(columns), info=datasets.DatasetInfo(features=features))
    shards = [{"run_uri": s.run_uri, "run_id": s.run_id, "shard_id": s.shard_id, "rel": s.rel,
               "row_count": s.row_count, "size_bytes": s.size_bytes, "sha256": s.sha256} for s in runs.shards]
    return datasets.IterableDataset.from_generator(
        _shard_rows, features=features,
        gen_kwargs={"shards": shards, "storage": runs.storage_config.model_dump(mode="json"),
                    "verified_only": runs.row_filter.verified_only,
                    "finish_reasons": runs.row_filter.finish_reasons,
                    "columns": tuple(columns) if columns is not None else None},
    )
