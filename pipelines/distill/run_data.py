"""Which trace files a training job reads: the manifests of finished runs, or the commits of live ones.

    files = finished_run_files(cfg.data)              # every run must have manifest.json + _SUCCESS
    watcher = CommitWatcher(cfg.data.runs, cfg.data.storage)
    new_files, finished = watcher.poll()              # data.follow: shards committed since the last poll

Only what a run's `manifest.json` (finished run) or `commits/` (live run)
names is ever read; data folders are never listed, so an attempt that crashed
before its commit can never leak into training (DESIGN.md, commit protocol).
"""

from __future__ import annotations

from potstill.pipelines.output.commit import SUCCESS, RunNotFinishedError, committed_shard_ids, read_commits, read_manifest
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import StorageConfig
from potstill.schemas.training import TraceDataConfig


class TrainingDataError(ValueError):
    """The configured runs cannot be trained on as asked (the message names the run and the fix)."""


def finished_run_files(data: TraceDataConfig) -> list[str]:
    """Committed data files of every run in `data.runs`, run by run in manifest (shard) order.

    Raises TrainingDataError naming the run, what is missing and the fixes when
    a run has no manifest.json/_SUCCESS (not finished) or no shards.
    """
    files: list[str] = []
    for i, uri in enumerate(data.runs):
        storage = Storage(uri, data.storage)
        try:
            manifest = read_manifest(uri, data.storage)
        except RunNotFinishedError:
            missing = [name for name in ("manifest.json", SUCCESS) if not storage.exists(name)]
            live = len(read_commits(storage)) if storage.exists("run.json") else 0
            state = (f"it has {live} committed shards so far" if live else
                     "it has no committed shards (is it a generation output root?)")
            raise TrainingDataError(
                f"data.runs[{i}]: {storage.uri} is not a finished generation run: {' and '.join(missing)} missing; "
                f"{state}. Wait for the run to finish, re-run `potstill generate` with the same config and run id to "
                "finish and finalize it (committed shards are kept), or set data.follow: true to train on the live run "
                "as its shards commit"
            ) from None
        if not manifest.shards:
            raise TrainingDataError(f"data.runs[{i}]: {storage.uri} finished with no shards; generate traces into it first")
        files.extend(storage.uri_of(s.data_path) for s in manifest.shards)
    return files


class CommitWatcher:
    """Follows live runs: each `poll` returns the data files committed since the previous poll.

    A run counts as finished once its `_SUCCESS` exists; `_SUCCESS` is checked
    before the commits are listed, so when `poll` says finished, the files it
    has returned so far are the complete run (finalize writes `_SUCCESS` only
    after every shard is committed). Each poll lists the commit keys once and
    reads only the commits it has not read before, so a poll costs one
    listing plus the new commits, however many shards the run already has.
    """

    def __init__(self, runs: list[str], storage: StorageConfig, seen: list[str] | tuple[str, ...] = ()):
        self.runs = list(runs)
        self.storage = storage
        self.seen: set[str] = set(seen)  # data files handed out (a resumed follower passes what it trained on)
        self._stores = [Storage(uri, storage) for uri in self.runs]
        self._read: list[set[str]] = [set() for _ in self.runs]  # commit keys already read, per run

    def poll(self) -> tuple[list[str], bool]:
        """(newly committed data files in shard order, whether every run has finished)."""
        new: list[str] = []
        finished = True
        for store, read in zip(self._stores, self._read):
            finished &= store.exists(SUCCESS)
            fresh = committed_shard_ids(store) - read
            for shard_id, commit in read_commits(store, fresh).items():
                read.add(shard_id)
                uri = store.uri_of(commit.data_path)
                if uri not in self.seen:
                    self.seen.add(uri)
                    new.append(uri)
        return new, finished
