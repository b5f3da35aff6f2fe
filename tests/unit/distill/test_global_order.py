"""World-size independent batches: the same rows per optimizer step on 1, 2 or 4 workers, every row once an epoch,
a resume that skips whole steps, and a new order each epoch."""

from __future__ import annotations

import numpy as np
import pytest

from potstill.pipelines.distill.global_order import BlockRows, EpochOrder, GlobalOrderSource
from potstill.pipelines.distill.train_loop import LoopState

BLOCKS = {i: {"x": np.arange(start, start + n), "num_tokens": np.ones(n, np.int32)}
          for i, (start, n) in enumerate([(0, 7), (7, 5), (12, 9), (21, 2)])}
ROWS = 23


def _rows() -> BlockRows:
    fetched: list[int] = []
    rows = BlockRows([(i, len(b["x"])) for i, b in BLOCKS.items()], fetch=lambda ref: fetched.append(ref) or BLOCKS[ref])
    rows.fetched = fetched
    return rows


def _pad(n: int) -> dict:
    return {"x": np.full(n, -1), "num_tokens": np.zeros(n, np.int32)}


def steps(world: int, accum: int, epoch: int = 0, skip: int = 0, micro: int = 2) -> dict[int, list[int]]:
    """Rows of each optimizer step, all workers together (padding dropped)."""
    out: dict[int, list[int]] = {}
    g = micro * accum * world
    for rank in range(world):
        source = GlobalOrderSource(_rows(), micro, accum, rank, world, seed=3, pad=_pad, window_rows=5)
        for i, batch in enumerate(source(epoch, LoopState(rows_in_epoch=skip))):
            assert 1 <= len(batch["x"]) <= micro
            out.setdefault(i // accum + skip // g, []).extend(int(x) for x in batch["x"] if x >= 0)
    return {k: sorted(v) for k, v in out.items()}


def test_every_step_trains_the_same_rows_on_any_worker_count() -> None:
    two = steps(world=2, accum=1)
    assert two == steps(world=1, accum=2) == steps(world=4, accum=1, micro=1)
    assert sorted(r for rows in two.values() for r in rows) == list(range(ROWS))  # each row once
    assert len(two) == 6 and len(two[5]) == 3  # ceil(23 / 4) steps, the last one short


def test_a_resume_skips_whole_steps_and_continues_with_the_same_rows() -> None:
    full = steps(world=2, accum=1)
    assert steps(world=1, accum=2, skip=8) == {k: v for k, v in full.items() if k >= 2}
    assert steps(world=2, accum=1, skip=ROWS) == {}  # a finished epoch yields nothing
    with pytest.raises(ValueError, match="not a whole number of steps of 4 rows"):
        steps(world=2, accum=1, skip=6)


def test_epochs_have_different_orders_and_the_order_is_a_permutation() -> None:
    order = EpochOrder(ROWS, 5, seed=3)
    assert sorted(order.positions(0)) == list(range(ROWS))
    assert not np.array_equal(order.positions(0), order.positions(1))
    assert np.array_equal(order.positions(1), EpochOrder(ROWS, 5, seed=3).positions(1))
    assert steps(world=2, accum=1, epoch=0) != steps(world=2, accum=1, epoch=1)


def test_a_worker_fetches_each_block_of_a_window_once_and_keeps_only_its_rows() -> None:
    rows = _rows()
    source = GlobalOrderSource(rows, 2, 1, 0, 2, seed=3, pad=_pad, window_rows=ROWS)  # one window: the whole epoch
    list(source(0, LoopState()))
    assert sorted(rows.fetched) == [0, 1, 2, 3]
