"""The training job's Ray Data pipeline, and how Ray Train hands it to the workers in fixed equal splits.

    ds = build_dataset(files, cfg, tokenizer_path, use_teacher_ids=True, topk_width=20)
    trainer = TorchTrainer(..., datasets={"train": ds.materialize()}, dataset_config=FixedSplit())

Ray Train's default (`streaming_split`) gives each block to whichever worker
asks first, so the rows a rank trains on depend on timing, and two runs with
the same `run.seed` train different students. A materialized dataset (the
default path, without `run.max_steps`) is split once into equal, ordered row
ranges instead: rank r gets the same rows in every epoch and every run, and
shuffles them per epoch with its seeded local buffer. Lazy datasets
(`run.max_steps` set) keep Ray Train's streaming split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill.dataset import PACK_GROUP, arrow_filesystem, pack_traces, read_columns, strip_scheme

if TYPE_CHECKING:
    from potstill.schemas.training import TrainingConfig


def build_dataset(
    data_files: list[str], cfg: "TrainingConfig", tokenizer_path: str, use_teacher_ids: bool, topk_width: int,
) -> Any:
    """The packed Ray dataset (lazy) over exactly `data_files`."""
    import ray.data

    columns = read_columns(use_teacher_ids, topk_width)
    fs = arrow_filesystem(data_files[0], cfg.data.storage)
    paths = [strip_scheme(f) for f in data_files] if fs else list(data_files)
    ds = ray.data.read_parquet(paths, columns=columns, filesystem=fs)
    return ds.map_batches(
        pack_traces, batch_size=PACK_GROUP, batch_format="pyarrow",
        fn_kwargs={
            "data_cfg": cfg.data.model_dump(mode="json"), "tokenizer_path": tokenizer_path, "use_teacher_ids": use_teacher_ids,
            "topk_width": topk_width, "max_tokens": cfg.packing.max_tokens, "packing_enabled": cfg.packing.enabled,
        },
    )


def _build_fixed_split() -> type:
    import ray.train

    class FixedSplit(ray.train.DataConfig):
        """`DataConfig` that splits materialized datasets deterministically (see module docstring)."""

        def configure(self, datasets: dict[str, Any], world_size: int, worker_handles: Any, worker_node_ids: Any,
                      **kwargs: Any) -> list[dict[str, Any]]:
            from ray.data.dataset import MaterializedDataset

            fixed = {name: ds for name, ds in datasets.items() if isinstance(ds, MaterializedDataset)}
            streamed = {name: ds for name, ds in datasets.items() if name not in fixed}
            output = super().configure(streamed, world_size, worker_handles, worker_node_ids, **kwargs)
            for name, ds in fixed.items():
                for rank, part in enumerate(ds.split(world_size, equal=True)):
                    output[rank][name] = part.iterator()
            return output

    FixedSplit.__module__, FixedSplit.__qualname__ = __name__, "FixedSplit"
    return FixedSplit


def __getattr__(name: str) -> Any:
    # Built on first use, so importing this module does not import Ray; pickling finds it here by name.
    if name == "FixedSplit":
        globals()[name] = cls = _build_fixed_split()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
