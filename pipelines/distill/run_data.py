"""Which trace files a training job reads: the manifests of finished runs, or the commits of live ones.

    files = finished_run_files(cfg.data)              # every run must have manifest.json + _SUCCESS
    watcher = CommitWatcher(cfg.data.runs, cfg.data.storage)
    new_files, finished = watcher.poll()              # data.follow: shards committed since the last poll
    watcher.check_alive(cfg.data.follow_idle_timeout_s)  # raises GeneratorStalledError once a run went quiet

Only what a run's `manifest.json` (finished run) or `commits/` (live run)
names is ever read; data folders are never listed, so an attempt that crashed
before its commit can never leak into training (DESIGN.md, commit protocol).
A shard is read once however often it is listed: the same run named several
ways in `data.runs` (`runs/x`, `./runs/x/`, an absolute path, `s3a://`), or a
copy of a run, is recognised by each shard's sha256. A live run's watcher
takes only commits of the plan its `run.json` records, and gives up on a run
that has committed nothing for `data.follow_idle_timeout_s` without
finishing (its generator died): by the store's clock, from the run's last
commit, so a restarted training job does not wait the whole time again.
"""

from __future__ import annotations

import logging
import time

from potstill.pipelines.output.commit import COMMITS_DIR, SUCCESS, RunNotFinishedError, committed_shard_ids, read_commits, read_manifest
from potstill.pipelines.output.run_record import RUN_RECORD, NotARunError, read_run_record
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import StorageConfig
from potstill.schemas.manifest import ShardCommit
from potstill.schemas.training import TraceDataConfig

log = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """The configured runs cannot be trained on as asked (the message names the run and the fix)."""


class GeneratorStalledError(TrainingDataError):
    """A followed run stopped committing without finishing: its generator is gone."""


STALL_CHECK_EVERY_S = 30.0
"""How often a waiting watcher looks at the runs' last commit times (a listing and a probe per run)."""


def finished_run_files(data: TraceDataConfig) -> list[str]:
    """Committed data files of every run in `data.runs`, run by run in manifest (shard) order.

    Raises TrainingDataError naming the run, what is missing and the fixes when
    a run has no manifest.json/_SUCCESS (not finished) or no shards.
    """
    files: list[str] = []
    seen: dict[str, str] = {}  # shard sha256 -> where it was first listed
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
        repeated = [s for s in manifest.shards if s.sha256 in seen]
        if repeated:
            log.warning("data.runs[%d] (%s): %d of its %d shards are already listed (first at %s); each is read once",
                        i, uri, len(repeated), len(manifest.shards), seen[repeated[0].sha256])
        for shard in manifest.shards:
            if shard.sha256 not in seen:
                seen[shard.sha256] = f"data.runs[{i}]"
                files.append(storage.uri_of(shard.data_path))
    return files


def _plan_hash(store: Storage) -> str | None:
    """The plan a live run records (None: a run of an older potstill, or no potstill run.json yet)."""
    try:
        record = read_run_record(store)
    except NotARunError:
        return None
    return record.plan_hash if record else None


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
        self.seen: set[str] = set(seen)
        self._digests: set[str] = set()  # sha256 of every shard returned: a run listed twice is read once
        self._stores = [Storage(uri, storage) for uri in self.runs]
        self._plans: dict[int, str | None] = {}
        self._started = time.monotonic()
        self._checked = float("-inf")
        self._read: list[set[str]] = [set() for _ in self.runs]  # commit keys already read, per run

    def _of_the_plan(self, i: int, store: Storage, commit: ShardCommit) -> bool:
        """Whether `commit` belongs to the plan the run's run.json records (read once per run)."""
        if i not in self._plans:
            self._plans[i] = _plan_hash(store)
        plan = self._plans[i]
        if plan is None or commit.plan_hash in (None, plan):
            return True
        log.warning("data.runs[%d]: skipping shard %s, committed from plan %s, not the run's plan %s", i,
                    commit.shard_id, commit.plan_hash[:12], plan[:12])
        return False

    def check_alive(self, idle_s: float) -> None:
        """Raise GeneratorStalledError if a run without `_SUCCESS` committed nothing for `idle_s`; checks the store at
        most every STALL_CHECK_EVERY_S (call it whenever a poll brought nothing new)."""
        now = time.monotonic()
        if now - self._checked < min(STALL_CHECK_EVERY_S, idle_s / 4):
            return
        self._checked = now
        for i, store in enumerate(self._stores):
            if store.exists(SUCCESS):
                continue
            times = [info.modified for info in store.list_info(COMMITS_DIR)]
            if store.exists(RUN_RECORD):
                times.append(store.modified(RUN_RECORD))
            if times:
                quiet, since = (store.store_now() - max(times)).total_seconds(), "its last commit"
            else:  # nothing there yet: count from when this watcher started
                quiet, since = now - self._started, "this job started (it has no run.json and no commit)"
            if quiet > idle_s:
                raise GeneratorStalledError(
                    f"data.runs[{i}]: {store.uri} has committed nothing for {quiet:,.0f} s since {since}, and has no "
                    f"_SUCCESS: its generation seems to have died. Re-run `potstill generate` with the same config and "
                    f"run id to finish it, then re-run this training job (it resumes from its last checkpoint); or "
                    f"raise data.follow_idle_timeout_s (now {idle_s:g} s) if shards take longer than that")

    def poll(self) -> tuple[list[str], bool]:
        """(newly committed data files in shard order, whether every run has finished)."""
        new: list[str] = []
        finished = True
        for i, (store, read) in enumerate(zip(self._stores, self._read)):
            finished &= store.exists(SUCCESS)
            fresh = committed_shard_ids(store) - read
            for shard_id, commit in read_commits(store, fresh).items():
                read.add(shard_id)
                uri = store.uri_of(commit.data_path)
                if uri in self.seen:  # returned before (or, on a resume, trained on before)
                    self._digests.add(commit.sha256)
                    continue
                if commit.sha256 in self._digests or not self._of_the_plan(i, store, commit):
                    continue
                self.seen.add(uri)
                self._digests.add(commit.sha256)
                new.append(uri)
        return new, finished
