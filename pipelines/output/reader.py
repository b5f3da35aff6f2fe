"""Read committed runs as one dataset: only what manifests (finished runs) or commits (live runs) name.

    runs = potstill.read_run(["runs/r1", "s3://bucket/r2"], verified_only=True, endpoint_url="http://...")
    runs.count_rows(); runs.to_table(columns=["messages", "completion"])
    runs.dataset          # a pyarrow.dataset.Dataset over exactly the committed files (the filter applied)
    runs.to_hf()          # datasets.Dataset; to_hf(streaming=True) -> datasets.IterableDataset
    runs.to_ray()         # ray.data.Dataset (pipelines/jobs/read_runs_ray.py)

The `data/` folders are never listed, so an attempt that crashed before its
commit can never be read. The shard list is taken once, when `read_run`
returns: a live run read twice through one `CommittedRuns` gives the same rows.
Several runs read as one give each row once: shards are keyed by the sha256
their commit records, so a run named twice (or a copy of it) is read once.
Every object goes through the project's storage stack (`storage.Storage`,
one retry policy for S3), and each shard's row count is checked against its
commit when it is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from potstill.pipelines.output.commit import (
    MANIFEST, SUCCESS, CommitError, RunNotFinishedError, read_commits, read_manifest,
)
from potstill.pipelines.output.run_record import RUN_RECORD
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import StorageConfig
from potstill.schemas.manifest import ShardStats
from potstill.schemas.trace import (
    TRACE_SCHEMA_VERSION, FinishReason, readable_schema_hashes, trace_arrow_schema, trace_read_schema, trace_schema_hash,
)

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class RowFilter:
    """Row-level conditions every reader applies (pushed down into Parquet scans where the reader can)."""

    verified_only: bool = True
    finish_reasons: tuple[FinishReason, ...] | None = None

    @property
    def columns(self) -> list[str]:
        """Columns the conditions need."""
        return (["verified"] if self.verified_only else []) + (["finish_reason"] if self.finish_reasons else [])

    def arrow_expression(self) -> Any:
        """The condition as a pyarrow.compute expression, or None when every row passes."""
        import pyarrow.compute as pc

        expr = None
        if self.verified_only:
            expr = pc.field("verified") == True  # noqa: E712 - an Arrow expression, not a Python comparison
        if self.finish_reasons:
            cond = pc.field("finish_reason").isin(list(self.finish_reasons))
            expr = cond if expr is None else expr & cond
        return expr

    def mask(self, table: "pa.Table") -> Any:
        """Boolean mask of the rows of `table` that pass (nulls count as failing)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        conditions = []
        if self.verified_only:
            conditions.append(pc.fill_null(pc.equal(table.column("verified"), True), False))
        if self.finish_reasons:
            conditions.append(pc.is_in(table.column("finish_reason"), pa.array(list(self.finish_reasons))))
        if not conditions:
            return pa.repeat(pa.scalar(True), table.num_rows)
        keep = conditions[0]
        for cond in conditions[1:]:
            keep = pc.and_(keep, cond)
        return keep

    def apply(self, table: "pa.Table") -> "pa.Table":
        return table.filter(self.mask(table)) if self.columns else table


@dataclass(frozen=True)
class CommittedShard:
    """One committed data object of one run."""

    run_uri: str
    run_id: str
    shard_id: str
    rel: str  # data object path relative to the run root
    row_count: int
    size_bytes: int
    sha256: str

    def uri(self, storage: Storage) -> str:
        return storage.uri_of(self.rel)


@dataclass
class RunInfo:
    """What one run's manifest (or commits) and run.json say."""

    uri: str
    run_id: str
    finished: bool
    shards: list[CommittedShard]
    totals: ShardStats
    config_fingerprint: str | None = None
    teacher_model: str | None = None
    teacher_revision: str | None = None
    config: dict[str, Any] | None = None  # run.json's generation config, when present
    failed_prompts: int = 0
    schema_version: int = TRACE_SCHEMA_VERSION  # the trace layout its shards were written in

    @property
    def accepted_fraction(self) -> float | None:
        judged = self.totals.verified + self.totals.rejected
        return self.totals.verified / judged if judged else None


class EmptyRunError(FileNotFoundError):
    """A run root holds no committed shard (nothing can be read)."""


def _run_record(storage: Storage) -> dict[str, Any] | None:
    try:
        return json.loads(storage.read_bytes(RUN_RECORD))
    except FileNotFoundError:
        return None


def _layout_of(hashes: set[str]) -> int:
    return 1 if hashes == {trace_schema_hash(1)} else TRACE_SCHEMA_VERSION


def _check_schema(storage: Storage, hashes: set[str]) -> None:
    if hashes - readable_schema_hashes() or len(hashes) > 1:
        raise CommitError(f"{storage.uri}: shards were written with trace schema {sorted(hashes)}, this potstill reads "
                          f"one of {sorted(readable_schema_hashes())} per run; read it with the potstill version that "
                          "wrote it")


def load_run(uri: str, storage_cfg: StorageConfig | None = None, *, allow_live: bool = True) -> RunInfo:
    """The committed shards of one run: the manifest's when finished, else every commit so far."""
    storage = Storage(uri, storage_cfg)
    record = _run_record(storage)
    config = record.get("config") if record else None
    if storage.exists(SUCCESS):
        manifest = read_manifest(uri, storage_cfg)
        _check_schema(storage, {manifest.schema_hash})
        shards = [CommittedShard(storage.uri, manifest.run_id, s.shard_id, s.data_path, s.row_count, s.size_bytes, s.sha256)
                  for s in manifest.shards]
        return RunInfo(storage.uri, manifest.run_id, True, shards, manifest.totals, manifest.config_fingerprint,
                       manifest.teacher_model, manifest.teacher_revision, config, len(manifest.failed),
                       _layout_of({manifest.schema_hash}))
    commits = read_commits(storage)
    if not commits:
        what = "it has run.json but no commit yet" if record else "no run.json, no commits/*.json"
        raise EmptyRunError(f"{storage.uri}: no committed shard ({what}); is this a potstill generation output root, "
                            "and has a shard committed yet?")
    if not allow_live:
        missing = [name for name in (MANIFEST, SUCCESS) if not storage.exists(name)]
        raise RunNotFinishedError(
            f"{storage.uri} is not a finished run ({' and '.join(missing)} missing; {len(commits)} shards committed so "
            "far). Wait for it, re-run `potstill generate` with the same run id to finish it, or allow live runs "
            "(--live / allow_live=True) to read the shards committed so far")
    ordered = [commits[k] for k in sorted(commits)]
    _check_schema(storage, {c.schema_hash for c in ordered})
    run_ids = {c.run_id for c in ordered}
    if len(run_ids) != 1:
        raise CommitError(f"{storage.uri}: commits belong to several runs {sorted(run_ids)}; one output root holds one run")
    teacher = (config or {}).get("teacher", {})
    return RunInfo(
        storage.uri, ordered[0].run_id, False,
        [CommittedShard(storage.uri, c.run_id, c.shard_id, c.data_path, c.row_count, c.size_bytes, c.sha256) for c in ordered],
        sum((c.stats for c in ordered), ShardStats()), (record or {}).get("config_fingerprint"),
        teacher.get("model"), teacher.get("revision"), config, sum(len(c.failed) for c in ordered),
        _layout_of({c.schema_hash for c in ordered}),
    )


@dataclass
class CommittedRuns:
    """Committed shards of one or more runs, read as one dataset (see the module docstring)."""

    runs: list[RunInfo]
    shards: list[CommittedShard]
    row_filter: RowFilter = field(default_factory=RowFilter)
    storage_config: StorageConfig = field(default_factory=StorageConfig)
    duplicate_shards: int = 0
    _stores: dict[str, Storage] = field(default_factory=dict, repr=False)

    def storage_for(self, shard: CommittedShard) -> Storage:
        store = self._stores.get(shard.run_uri)
        if store is None:
            store = self._stores[shard.run_uri] = Storage(shard.run_uri, self.storage_config)
        return store

    @property
    def files(self) -> list[str]:
        """Full URIs of the committed data objects, in read order."""
        return [s.uri(self.storage_for(s)) for s in self.shards]

    @property
    def committed_rows(self) -> int:
        """Rows in the committed shards, before the row filter."""
        return sum(s.row_count for s in self.shards)

    @property
    def committed_bytes(self) -> int:
        return sum(s.size_bytes for s in self.shards)

    @property
    def schema(self) -> "pa.Schema":
        """The rows' schema as read: `topk_logprobs` are float32 log-probabilities whatever layout stored them."""
        return trace_read_schema()

    @staticmethod
    def check_columns(columns: Sequence[str] | None) -> None:
        """ValueError naming any column a trace row does not have."""
        if columns is None:
            return
        if isinstance(columns, str):
            raise ValueError(f"columns={columns!r} is a string; pass a list of column names")
        known = trace_arrow_schema().names
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise ValueError(f"columns {unknown} are not trace columns; choose from {', '.join(known)}")

    # ---- reading ------------------------------------------------------------

    def read_shard(self, shard: CommittedShard, columns: Sequence[str] | None = None, *,
                   filtered: bool = True) -> "pa.Table":
        """One shard's rows (only `columns` when given; the row filter applied unless filtered=False)."""
        self.check_columns(columns)
        need = None if columns is None else list(dict.fromkeys([*columns, *(self.row_filter.columns if filtered else [])]))
        store = self.storage_for(shard)
        table = store.read_table(shard.rel, columns=need)
        if table.num_rows != shard.row_count:
            raise CommitError(f"{store.uri_of(shard.rel)} holds {table.num_rows} rows but its commit says "
                              f"{shard.row_count}: it was changed outside potstill. Delete commits/{shard.shard_id}.json "
                              "and re-run the generation with the same run id to regenerate that shard")
        if filtered:
            table = self.row_filter.apply(table)
        if "topk_logprobs" in table.column_names:  # stored as compact codes (layout 2) or float16 (layout 1)
            from potstill.pipelines.output.topk_codec import decode_logprobs_column

            i = table.schema.get_field_index("topk_logprobs")
            table = table.set_column(i, trace_read_schema().field("topk_logprobs"), decode_logprobs_column(table.column(i)))
        return table.select(list(columns)) if columns is not None else table

    def iter_tables(self, columns: Sequence[str] | None = None, *, filtered: bool = True) -> Iterator[tuple[CommittedShard, "pa.Table"]]:
        """(shard, its rows) for every shard in order, one shard in memory at a time."""
        for shard in self.shards:
            yield shard, self.read_shard(shard, columns, filtered=filtered)

    def to_table(self, columns: Sequence[str] | None = None) -> "pa.Table":
        """Every row that passes the filter, in one Arrow table (mind the memory for large runs)."""
        import pyarrow as pa

        tables = [t for _, t in self.iter_tables(columns)]
        if not tables:
            schema = trace_read_schema()
            return schema.empty_table() if columns is None else pa.schema([schema.field(c) for c in columns]).empty_table()
        return pa.concat_tables(tables)

    def count_rows(self) -> int:
        """Rows that pass the filter (reads only the filter's columns)."""
        if not self.row_filter.columns:
            return self.committed_rows
        return sum(t.num_rows for _, t in self.iter_tables(self.row_filter.columns))

    @property
    def dataset(self) -> Any:
        """A `pyarrow.dataset.Dataset` over exactly the committed files, with the row filter applied.

        It reads the stored layout as is: `topk_logprobs` are the compact uint8 codes of
        `pipelines/output/topk_codec.py` (decode them with `decode_logprobs_column`).

        S3 files are read through this project's retrying s3fs filesystem
        (wrapped in pyarrow's `PyFileSystem`); local ones natively.
        """
        import pyarrow.dataset as ds
        import pyarrow.fs as pafs

        schema = trace_arrow_schema()
        children = []
        for run in self.runs:
            mine = [s for s in self.shards if s.run_uri == run.uri]
            if not mine:
                continue
            store = self.storage_for(mine[0])
            fs = pafs.PyFileSystem(pafs.FSSpecHandler(store.fs)) if store.remote else pafs.LocalFileSystem()
            children.append(ds.dataset([store.path(s.rel) for s in mine], schema=trace_arrow_schema(run.schema_version),
                                       format="parquet", filesystem=fs))
        dataset = children[0] if len(children) == 1 else ds.dataset(children) if children else ds.dataset([], schema=schema)
        expr = self.row_filter.arrow_expression()
        return dataset.filter(expr) if expr is not None else dataset

    # ---- other frameworks ---------------------------------------------------

    def to_hf(self, streaming: bool | None = None, columns: Sequence[str] | None = None) -> Any:
        """A Hugging Face `datasets.Dataset` (in memory), or an `IterableDataset` streaming shard by shard.

        streaming=None streams when the committed shards exceed
        `hf_dataset.STREAM_ABOVE_BYTES`. The iterable one has one data source
        per shard, so `datasets`' `num_workers` / `split_dataset_by_node` split it.
        """
        from potstill.pipelines.output.hf_dataset import to_hf_dataset

        return to_hf_dataset(self, streaming=streaming, columns=columns)

    def to_ray(self, columns: Sequence[str] | None = None) -> Any:
        """A `ray.data.Dataset` over the committed files (Ray lives in pipelines/jobs/, imported only here)."""
        from potstill.pipelines.jobs.read_runs_ray import runs_to_ray

        return runs_to_ray(self, columns=columns)


def read_run(
    uris: str | Sequence[str],
    *,
    verified_only: bool = True,
    finish_reasons: Sequence[FinishReason] | None = None,
    storage: StorageConfig | None = None,
    endpoint_url: str | None = None,
    allow_live: bool = True,
) -> CommittedRuns:
    """Committed rows of one or more runs as one dataset; see the module docstring.

    `verified_only` keeps rows whose verifier said True; `finish_reasons`
    keeps rows that stopped for one of those reasons. `storage` (or just
    `endpoint_url`) configures s3:// access; credentials come from the
    environment. `allow_live=False` refuses runs without a manifest.
    """
    if isinstance(uris, str):
        uris = [uris]
    if not uris:
        raise ValueError("read_run needs at least one run output root (a local folder or an s3:// URI)")
    if storage is not None and endpoint_url is not None:
        raise ValueError("pass either storage=StorageConfig(...) or endpoint_url=..., not both")
    storage_cfg = storage or StorageConfig(endpoint_url=endpoint_url)
    runs: list[RunInfo] = []
    seen_roots: set[str] = set()
    for uri in uris:
        root = Storage(uri, storage_cfg).uri
        if root in seen_roots:
            continue
        seen_roots.add(root)
        runs.append(load_run(uri, storage_cfg, allow_live=allow_live))
    shards: list[CommittedShard] = []
    seen: set[str] = set()
    duplicates = 0
    for run in runs:
        for shard in run.shards:
            if shard.sha256 in seen:
                duplicates += 1
                continue
            seen.add(shard.sha256)
            shards.append(shard)
    row_filter = RowFilter(verified_only, tuple(finish_reasons) if finish_reasons else None)
    if verified_only:
        unjudged = [r.uri for r in runs if r.totals.traces and r.totals.verified + r.totals.rejected == 0]
        if unjudged:
            raise ValueError(f"verified_only=True but {unjudged[0]} has no verifier verdicts (generated with verify.method "
                             "none), so no row could pass; pass verified_only=False (--all-rows) to read its rows")
    return CommittedRuns(runs, shards, row_filter, storage_cfg, duplicates)
