"""Per-worker streaming reader: committed trace files -> packed micro-batches, without Ray Data.

    reader = LocalReader(spec, micro_batch_size=4)
    for batch in reader.batches(["s3://b/run/data/000001-ab/x.parquet", ...]):
        ...                                             # the same arrays Ray Data's pipeline yields

Follow mode (`data.follow`) uses it: a Ray Data dataset is fixed when the
trainer starts, so shards that commit later reach the workers through this
reader instead (each worker reads its share of each round of new shards, see
`follow.py`). It reads exactly the files it is given, `PACK_GROUP` rows at a
time, and runs the same filter/tokenize/pack function as `dataset.py`, so the
rows are identical and deterministic (a resume can skip by counting).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from potstill.pipelines.distill.dataset import PACK_GROUP, arrow_filesystem, pack_traces, read_columns, strip_scheme
from potstill.pipelines.distill.tokenize import IGNORE_INDEX

ROW_KEYS = ("input_ids", "labels", "position_ids", "topk_ids", "topk_logprobs", "num_docs", "num_tokens")


@dataclass(frozen=True)
class PackSpec:
    """Everything `pack_traces` needs, as plain values (travels to Ray workers)."""

    data_cfg: dict[str, Any]
    """`TraceDataConfig` as JSON (filters and storage)."""
    tokenizer_path: str
    use_teacher_ids: bool
    topk_width: int
    max_tokens: int
    packing_enabled: bool = True
    pad_id: int = 0

    def pack_kwargs(self) -> dict[str, Any]:
        return {"data_cfg": self.data_cfg, "tokenizer_path": self.tokenizer_path, "use_teacher_ids": self.use_teacher_ids,
                "topk_width": self.topk_width, "max_tokens": self.max_tokens, "packing_enabled": self.packing_enabled}


def empty_batch(spec: PackSpec, rows: int) -> dict[str, np.ndarray]:
    """`rows` all-padding rows: no labels, so they add nothing to the loss (a worker with no data left trains on these
    to keep its collective calls in step with the others)."""
    t, k = spec.max_tokens, spec.topk_width
    out = {
        "input_ids": np.full((rows, t), spec.pad_id, dtype=np.int32),
        "labels": np.full((rows, t), IGNORE_INDEX, dtype=np.int32),
        "position_ids": np.broadcast_to(np.arange(t, dtype=np.int32), (rows, t)).copy(),
        "num_docs": np.zeros(rows, dtype=np.int32),
        "num_tokens": np.zeros(rows, dtype=np.int32),
    }
    if k:
        out["topk_ids"] = np.full((rows, t, k), -1, dtype=np.int32)
        out["topk_logprobs"] = np.zeros((rows, t, k), dtype=np.float16)
    return out


class LocalReader:
    """Reads and packs trace files in order, yielding micro-batches of `micro_batch_size` packed rows drawn at
    random (seeded) from a buffer of `shuffle_rows` rows (packing groups rows by document length)."""

    def __init__(self, spec: PackSpec, micro_batch_size: int, shuffle_rows: int = 0, seed: int = 0):
        from potstill.schemas.training import TraceDataConfig

        self.spec = spec
        self.micro_batch_size = micro_batch_size
        self.shuffle_rows = shuffle_rows
        self.seed = seed
        self.storage = TraceDataConfig.model_validate(spec.data_cfg).storage

    def _tables(self, files: Iterable[str]) -> Iterator[Any]:
        import pyarrow.parquet as pq

        columns = read_columns(self.spec.use_teacher_ids, self.spec.topk_width)
        for uri in files:
            fs = arrow_filesystem(uri, self.storage)
            with pq.ParquetFile(strip_scheme(uri) if fs else uri, filesystem=fs) as pf:
                yield from (_as_table(b) for b in pf.iter_batches(batch_size=PACK_GROUP, columns=columns))

    def batches(self, files: Iterable[str], epoch: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Micro-batches over `files` (the last one may be smaller); deterministic for the same files and epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        pool: dict[str, np.ndarray] | None = None
        mb = self.micro_batch_size
        for table in self._tables(files):
            packed = pack_traces(table, **self.spec.pack_kwargs())
            if not len(packed["input_ids"]):
                continue
            pool = packed if pool is None else {k: np.concatenate([pool[k], packed[k]]) for k in pool}
            while len(pool["input_ids"]) >= max(self.shuffle_rows, mb):
                batch, pool = _draw(pool, mb, rng)
                yield batch
        while pool is not None and len(pool["input_ids"]):
            batch, pool = _draw(pool, min(mb, len(pool["input_ids"])), rng)
            yield batch


def _as_table(batch: Any) -> Any:
    import pyarrow as pa

    return pa.Table.from_batches([batch])


def _draw(pool: dict[str, np.ndarray], n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`n` random rows of `pool` (as a batch), and the rows left."""
    picked = np.zeros(len(pool["input_ids"]), dtype=bool)
    picked[rng.choice(len(picked), size=n, replace=False)] = True
    return {k: v[picked] for k, v in pool.items()}, {k: v[~picked] for k, v in pool.items()}
