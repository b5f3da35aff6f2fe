"""World-size independent batches: every optimizer step trains on the same packed rows on any number of workers.

    order = EpochOrder(num_rows=400, window_rows=512, seed=0)
    source = GlobalOrderSource(BlockRows(blocks, fetch_block), micro_rows=2, accum=1, rank=r, world=w, seed=0, pad=empty_rows)
    run_loop(..., epoch_batches=source, ...)          # source(epoch, state) -> this worker's micro-batches

`blocks` lists the blocks of the materialized packed dataset in order (Ray
object refs and row counts). Epoch e visits all N rows in an order that
depends only on (seed, e): windows of `window_rows` consecutive rows in a
seeded random order, each window's rows in a seeded random order (a bounded
shuffle across the whole epoch: packing emits rows grouped by length).
Position p of that order belongs to micro-chunk c = p // micro_rows; worker r of
w trains on chunks r, r + w, r + 2w, ..., `accum` of them per optimizer step, so
step s covers positions [s*G, (s+1)*G) with G = micro_rows * accum * w: the same
rows for every w with the same G (`run.global_batch_size`). That is what lets
a checkpoint written by 2 workers resume on 1 with the very batch it would have
trained next. A resume skips `state.rows_in_epoch` positions (always whole
steps). The last step of an epoch may be short; a worker with no chunk left in
a micro-batch slot gets an all-padding batch (no labels: no loss, no gradient).

A worker fetches each window's blocks once (`fetch(ref)`: from Ray's object
store, zero-copy on its node, `jobs.train_dataset.fetch_block`) and keeps only
its own rows of that window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from potstill.pipelines.distill.train_loop import LoopState

WINDOW_ROWS = 512
"""Rows shuffled together (all workers together); the order of the windows is shuffled too."""


@dataclass(frozen=True)
class EpochOrder:
    """The order in which an epoch visits the rows (see module docstring)."""

    num_rows: int
    window_rows: int
    seed: int

    def positions(self, epoch: int) -> np.ndarray:
        """Source row of each position of epoch `epoch` (a permutation of range(num_rows))."""
        n, w = self.num_rows, self.window_rows
        windows = math.ceil(n / w) if n else 0
        rng = np.random.default_rng([self.seed, epoch])
        parts = []
        for j in rng.permutation(windows):
            start, stop = int(j) * w, min(n, (int(j) + 1) * w)
            parts.append(start + np.random.default_rng([self.seed, epoch, int(j)]).permutation(stop - start))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def steps_per_epoch(num_rows: int, global_batch: int) -> int:
    """Optimizer steps of one epoch (the last may be short)."""
    return math.ceil(num_rows / global_batch)


def chunk_positions(step: int, slot: int, rank: int, world: int, micro_rows: int, accum: int, num_rows: int) -> range:
    """The epoch positions worker `rank` trains on in micro-batch `slot` of optimizer step `step` (maybe empty)."""
    chunk = (step * accum + slot) * world + rank
    start = chunk * micro_rows
    return range(min(start, num_rows), min(start + micro_rows, num_rows))


class BlockRows:
    """Rows of the materialized dataset by index, fetched window by window (only the rows asked for are kept)."""

    def __init__(self, blocks: list[tuple[Any, int]], fetch: Callable[[Any], dict[str, np.ndarray]]):
        self.refs = [ref for ref, _ in blocks]
        self.bounds = np.concatenate([[0], np.cumsum([n for _, n in blocks])]).astype(np.int64)
        self.fetch = fetch

    @property
    def num_rows(self) -> int:
        return int(self.bounds[-1])

    def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The given source rows (any order), as one batch in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        block_of = np.searchsorted(self.bounds, rows, side="right") - 1
        out: dict[str, np.ndarray] | None = None
        for b in np.unique(block_of):
            at = np.nonzero(block_of == b)[0]
            data = self.fetch(self.refs[b])
            local = rows[at] - self.bounds[b]
            if out is None:
                out = {k: np.empty((len(rows),) + v.shape[1:], dtype=v.dtype) for k, v in data.items()}
            for k, v in data.items():
                out[k][at] = v[local]
        return out if out is not None else {}


class GlobalOrderSource:
    """`epoch_batches(epoch, state)` for `run_loop` over a materialized packed dataset (see module docstring)."""

    def __init__(self, rows: BlockRows, micro_rows: int, accum: int, rank: int, world: int, seed: int,
                 pad: Callable[[int], dict[str, np.ndarray]], window_rows: int = WINDOW_ROWS):
        self.rows = rows
        self.micro_rows, self.accum, self.rank, self.world = micro_rows, accum, rank, world
        self.order = EpochOrder(rows.num_rows, window_rows, seed)
        self.pad = pad

    @property
    def global_batch(self) -> int:
        return self.micro_rows * self.accum * self.world

    def __call__(self, epoch: int, state: "LoopState") -> Iterator[dict[str, np.ndarray]]:
        n, g = self.rows.num_rows, self.global_batch
        if state.rows_in_epoch % g and state.rows_in_epoch < n:
            raise ValueError(f"the checkpoint trained {state.rows_in_epoch} rows of epoch {epoch}, not a whole number of "
                             f"steps of {g} rows: resume with the run.global_batch_size it was trained with")
        positions = self.order.positions(epoch)
        window = self.order.window_rows
        mine: dict[int, tuple[dict[str, np.ndarray], np.ndarray]] = {}
        for step in range(-(-state.rows_in_epoch // g), steps_per_epoch(n, g)):  # a finished epoch: nothing left
            for slot in range(self.accum):
                span = chunk_positions(step, slot, self.rank, self.world, self.micro_rows, self.accum, n)
                if not len(span):
                    yield self.pad(self.micro_rows)
                    continue
                # Fetch by windows of positions: this worker's rows of a window in one pass over its blocks.
                first = span.start // window
                for w in [w for w in mine if w < first]:
                    del mine[w]
                for w in range(first, (span.stop - 1) // window + 1):
                    if w not in mine:
                        mine[w] = self._window(positions, w, window, n)
                parts = [(mine[p // window][0], int(mine[p // window][1][p % window])) for p in span]
                yield {k: np.stack([rows[k][i] for rows, i in parts]) for k in parts[0][0]}

    def _window(self, positions: np.ndarray, w: int, window: int, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """This worker's rows among positions [w*window, (w+1)*window), and for each position of the window the
        index of its row there (-1: another worker's)."""
        lo, hi = w * window, min(n, (w + 1) * window)
        span = np.arange(lo, hi)
        ours = ((span // self.micro_rows) % self.world) == self.rank
        index = np.full(hi - lo, -1, dtype=np.int64)
        index[ours] = np.arange(int(ours.sum()))
        return self.rows.take(positions[span[ours]]), index
