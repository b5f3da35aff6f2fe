"""Crash a small generation at every storage call, re-run it, and check what readers and gc see.

    calls = clean_calls(out_uri, storage)                    # a clean run's storage calls, in order
    crash_at(out_uri, storage, index, "after")               # a forked child runs it and exits at call `index`

The generation is the real controller on the simulated pool (scripted
teacher, virtual clock) with REAL storage, local or S3: every shard is
really written, verified and committed. A crash is a forked child process
that `os._exit`s at one storage call, so nothing of the dying process runs
afterwards — no `finally`, no abort of a multipart upload — as when a node
is lost. The crash points (`crash_points`) are: before each call of a clean
run (the run is single-threaded between calls, so "after call i" leaves the
store as "before call i+1" does), after the last one, and inside each
`open_write`, with the bytes written but not yet published. Each is checked by
`assert_recovers`: after the crash no commit names a missing object (also
after a gc of the half-done run), the re-run's output is exactly the clean
run's `(prompt_id, sample_index)` set with nothing duplicated, and gc then
leaves exactly the objects the manifest names.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow.parquet as pq

from potstill.pipelines.generate.controller import GenerationController
from potstill.pipelines.generate.simulated_pool import SimulatedPool
from potstill.pipelines.output.commit import gc_run, read_commits, read_manifest
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import GenerationConfig, StorageConfig

COUNT, PER_SHARD, N = 4, 2, 2
STORAGE_CALLS = ("put_if_absent", "put", "open_write", "sync", "delete", "read_bytes", "read_many", "open_read",
                 "exists", "size", "modified", "list_info", "top_level", "incomplete", "discard")
"""Every Storage method that touches the store; nested calls (put_if_absent reading back) count on their own."""
CRASHED = 86  # exit status of a child that crashed on purpose


def config(uri: str, storage: StorageConfig) -> GenerationConfig:
    return GenerationConfig.model_validate({
        "run_id": "crash",
        "prompts": {"arithmetic": {"count": COUNT, "digits": 2, "seed": 5}},
        "teacher": {"model": "scripted-teacher", "revision": "test"},
        "replicas": {"min_sequences_in_flight": None},
        "sampling": {"n": N},
        "verify": {"method": "exact"},
        "output": {"uri": uri, "prompts_per_shard": PER_SHARD, "storage": storage.model_dump()},
    })


def generate(uri: str, storage: StorageConfig) -> dict[str, Any]:
    cfg = config(uri, storage)
    controller = GenerationController(cfg, uri)
    controller.lease_beat_s = 0.05  # a crashed run's lease would hold each re-run for 2 beats; the lease is not under test
    return controller.run(SimulatedPool(cfg, uri, script=lambda prompt, k: f"<think>{k}</think>{k}"))


class Interposer:
    """Wraps Storage's methods: records each call, and exits the process at call `crash_at` (`when` it happens)."""

    def __init__(self, crash_at: int | None = None, when: str = "before"):
        self.crash_at, self.when = crash_at, when
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # write_shard syncs in a thread beside its read-back

    def enter(self, method: str, rel: Any) -> int:
        with self._lock:
            self.calls.append((method, str(rel)))
            index = len(self.calls) - 1
        self.maybe_crash(index, "before")
        return index

    def maybe_crash(self, index: int, when: str) -> None:
        if index == self.crash_at and when == self.when:
            os._exit(CRASHED)  # no cleanup of any kind, as when the node is lost

    def wrap(self, name: str, original: Any) -> Any:
        interposer = self
        if name == "open_write":
            @contextmanager
            def open_write(storage: Storage, rel: str) -> Iterator[Any]:
                index = interposer.enter(name, rel)
                with original(storage, rel) as f:
                    yield f
                    interposer.maybe_crash(index, "inside")  # bytes written, object not yet published
                interposer.maybe_crash(index, "after")
            return open_write

        def call(storage: Storage, *args: Any, **kwargs: Any) -> Any:
            index = interposer.enter(name, args[0] if args else "")
            try:
                return original(storage, *args, **kwargs)
            finally:  # "after" also when the call raised (a read of an object not there yet)
                interposer.maybe_crash(index, "after")
        return call


@contextmanager
def interposed(interposer: Interposer) -> Iterator[Interposer]:
    originals = {name: getattr(Storage, name) for name in STORAGE_CALLS}
    for name, original in originals.items():
        setattr(Storage, name, interposer.wrap(name, original))
    try:
        yield interposer
    finally:
        for name, original in originals.items():
            setattr(Storage, name, original)


def clean_calls(uri: str, storage: StorageConfig) -> tuple[list[tuple[str, str]], set[tuple[str, int]]]:
    """A clean run's storage calls (method, path) in order, and the (prompt_id, sample_index) set it produced."""
    with interposed(Interposer()) as spy:
        generate(uri, storage)
    keys = output_keys(uri, storage)
    return spy.calls, set(keys)


def crash_points(calls: list[tuple[str, str]]) -> list[tuple[int, str]]:
    """(call index, when) of every distinct crash point of a run that makes `calls`."""
    points = [(i, "before") for i in range(len(calls))] + [(len(calls) - 1, "after")]
    points += [(i, "inside") for i, (method, _) in enumerate(calls) if method == "open_write"]
    return sorted(points)


def crash_at(uri: str, storage: StorageConfig, index: int, when: str) -> bool:
    """Run the generation in a forked child that exits at storage call `index`; True if it crashed there."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            with interposed(Interposer(index, when)):
                generate(uri, storage)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, CRASHED), f"the run failed at crash point {index} {when} with exit status {code}"
    return code == CRASHED


def output_keys(uri: str, storage: StorageConfig) -> list[tuple[str, int]]:
    """(prompt_id, sample_index) of every row the finished run's manifest names."""
    store = Storage(uri, storage)
    keys: list[tuple[str, int]] = []
    for shard in read_manifest(uri, storage).shards:
        with store.open_read(shard.data_path) as f, pq.ParquetFile(f) as pf:
            table = pf.read(columns=["prompt_id", "sample_index"])
        keys += zip(table.column("prompt_id").to_pylist(), table.column("sample_index").to_pylist())
    return keys


def dangling_commits(store: Storage) -> list[str]:
    """Commits whose data object is missing or of another size than the commit records."""
    sizes = {info.rel: info.size for info in store.list_info("data")}
    return [c.shard_id for c in read_commits(store).values() if sizes.get(c.data_path) != c.size_bytes]


def assert_recovers(uri: str, storage: StorageConfig, clean: set[tuple[str, int]], where: str) -> None:
    """After a crash: consistent commits (also after gc), a re-run with exactly the clean output, gc to the manifest."""
    store = Storage(uri, storage)
    assert not dangling_commits(store), f"{where}: a commit names a missing object after the crash"
    if store.exists("run.json"):
        gc_run(uri, storage)  # gc of a half-done run must never take what a commit (now or later) names
        assert not dangling_commits(store), f"{where}: gc of the crashed run removed a committed object"
    generate(uri, storage)
    keys = output_keys(uri, storage)
    assert len(keys) == len(set(keys)), f"{where}: a row is duplicated"
    assert set(keys) == clean, f"{where}: lost {len(clean - set(keys))} rows, extra {len(set(keys) - clean)}"
    assert not dangling_commits(store), f"{where}: a commit names a missing object after the re-run"
    report = gc_run(uri, storage)
    assert not report.skipped_live and not report.foreign, f"{where}: gc of the finished run left {report}"
    named = sorted(s.data_path for s in read_manifest(uri, storage).shards)
    assert sorted(store.list("data")) == named, f"{where}: after gc, data/ holds more than the manifest names"
    assert not store.incomplete("data"), f"{where}: gc left a partial write"
