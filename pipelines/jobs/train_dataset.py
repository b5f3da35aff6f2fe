"""The training job's Ray Data pipeline: committed trace files -> filtered, tokenized, packed rows.

    ds = build_dataset([files], cfg, tokenizer_path, use_teacher_ids=True, topk_width=20)   # lists of files, by format
    blocks = materialized_blocks(ds.materialize())    # [(object ref, rows), ...] in order, for the workers

Files are read in groups of one trace layout (`split_by_format`: a run's shards
all share one; runs written before and after the compact top-k format may be
mixed in one job), each group packed by the same function, and the groups
unioned: after packing every row has the same shapes, whatever the layout it
came from. The default path (no `run.max_steps`) materializes the packed
dataset once and hands the workers its blocks in order
(`distill/global_order.py` turns them into the same global batches on any
worker count); with `run.max_steps` the lazy dataset streams to the workers
through Ray Train's streaming split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill.dataset import PACK_GROUP, TraceSource, arrow_filesystem, pack_traces, read_columns, run_of, strip_scheme

if TYPE_CHECKING:
    from potstill.schemas.training import TrainingConfig


def split_by_format(data_files: list[str], sources: list[TraceSource]) -> list[list[str]]:
    """`data_files` in groups of one trace layout (per run, from `trace_sources`), order kept within a group."""
    version = {s.run: s.layout for s in sources}
    groups: dict[int, list[str]] = {}
    for f in data_files:
        groups.setdefault(version.get(run_of(f), 0), []).append(f)
    return [groups[v] for v in sorted(groups)]


def build_dataset(
    file_groups: list[list[str]], cfg: "TrainingConfig", tokenizer_path: str, use_teacher_ids: bool, topk_width: int,
) -> Any:
    """The packed Ray dataset (lazy) over exactly the files of `file_groups` (each group one trace layout)."""
    import ray.data

    columns = read_columns(use_teacher_ids, topk_width)
    kwargs = {
        "data_cfg": cfg.data.model_dump(mode="json"), "tokenizer_path": tokenizer_path, "use_teacher_ids": use_teacher_ids,
        "topk_width": topk_width, "max_tokens": cfg.packing.max_tokens, "packing_enabled": cfg.packing.enabled,
    }
    parts = []
    for files in (g for g in file_groups if g):
        fs = arrow_filesystem(files[0], cfg.data.storage)
        paths = [strip_scheme(f) for f in files] if fs else list(files)
        ds = ray.data.read_parquet(paths, columns=columns, filesystem=fs)
        parts.append(ds.map_batches(pack_traces, batch_size=PACK_GROUP, batch_format="pyarrow", fn_kwargs=kwargs))
    if not parts:
        raise ValueError("no trace files to train on")
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def materialized_blocks(ds: Any) -> list[tuple[Any, int]]:
    """The blocks of a materialized dataset in order: (object ref, row count) each."""
    return [(ref, meta.num_rows) for bundle in ds.iter_internal_ref_bundles()
            for ref, meta in zip(bundle.block_refs, bundle.metadata)]


def fetch_block(ref: Any) -> dict[str, Any]:
    """A materialized block's columns as numpy arrays (from the object store; zero-copy on the block's node)."""
    import ray
    from ray.data.block import BlockAccessor

    return BlockAccessor.for_block(ray.get(ref)).to_numpy()
