"""How Ray Train hands the packed dataset to its workers: fixed equal splits of a materialized dataset.

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

from typing import Any


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
