"""The exactly-once commit protocol over a run output root (local folder or S3, no rename needed).

    written = write_shard(storage, run_id, shard_id, table)            # data/<shard>/<attempt>.parquet
    commit = commit_shard(storage, written, run_id, shard_id, prompt_ids, failed, stats)
    finalize_run(storage, run_id, fingerprint, model, revision, plan.shard_ids)

A shard exists for readers once `commits/<shard_id>.json` exists; it is
created conditionally, so of racing attempts exactly one wins and the losers
delete their own data objects. A fresh commit re-checks that its data object
is still there and withdraws itself if not, so no commit ever names a
missing object. `manifest.json` then `_SUCCESS` (also conditional creates,
deterministic bytes) mark a finished run. Readers use `committed_data_files`.

`gc_run` removes attempt objects no commit names, and only those that can
never be committed any more: objects of shards already committed to another
attempt, or of any shard once the run is finished. An attempt of a shard
with no commit yet may belong to a live (or paused) writer about to commit
it; it is left alone unless the caller forces it (no writer running), and
ages are measured by the store's clock. gc acts only on a potstill run root
(`run.json`) and only on objects of potstill's own name pattern.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pydantic import ValidationError

from potstill.pipelines.output.run_record import require_run
from potstill.pipelines.output.shard_writer import WrittenShard, data_path_for
from potstill.pipelines.output.storage import IncompleteWrite, Storage
from potstill.schemas.manifest import FailedPrompt, ManifestShard, RunManifest, ScalingAttempt, ShardCommit, ShardStats
from potstill.schemas.generation import StorageConfig
from potstill.schemas.trace import trace_schema_hash

log = logging.getLogger(__name__)

COMMITS_DIR = "commits"
DATA_DIR = "data"
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
FAILURES = "failures.jsonl"


class CommitError(RuntimeError):
    """The output root is inconsistent with the commit being made or the run being finalized."""


class RunNotFinishedError(FileNotFoundError):
    """The run has no manifest.json/_SUCCESS yet."""


def commit_path(shard_id: str) -> str:
    """Where a shard's commit record lives: commits/<shard_id>.json."""
    return f"{COMMITS_DIR}/{shard_id}.json"


def _dump(model: ShardCommit | RunManifest) -> bytes:
    return model.model_dump_json(indent=2).encode() + b"\n"


def _parse_commit(storage: Storage, rel: str, data: bytes) -> ShardCommit:
    try:
        return ShardCommit.model_validate_json(data)
    except ValidationError as exc:
        raise CommitError(f"{storage.uri_of(rel)} is not a valid shard commit ({exc.error_count()} errors: "
                          f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}); it was written by another "
                          f"potstill version or edited by hand") from exc


# ---- commit ---------------------------------------------------------------

def commit_shard(storage: Storage, written: WrittenShard, run_id: str, shard_id: str, prompt_ids: list[str],
                 failed: list[FailedPrompt], stats: ShardStats, *, plan_hash: str | None = None,
                 teacher_revision: str | None = None) -> ShardCommit:
    """Make `written` the shard's data, unless another attempt committed first.

    Returns the commit that is in force: ours, or the winner's (then our data
    object is deleted, unless it is the one the winner names, i.e. this is a
    repeated commit of the same attempt). Raises CommitError, withdrawing our
    commit, when our data object vanished before the commit landed (a forced
    gc beside this writer): the unit is then simply run again.
    """
    if written.data_path != data_path_for(shard_id, written.attempt_id):
        raise ValueError(f"written.data_path {written.data_path!r} is not shard {shard_id!r}'s attempt path "
                         f"{data_path_for(shard_id, written.attempt_id)!r}; pass the WrittenShard write_shard returned for this shard")
    if stats.traces != written.row_count or stats.failed_prompts != len(failed):
        raise ValueError(f"stats disagree with the shard: stats.traces={stats.traces} vs {written.row_count} rows written, "
                         f"stats.failed_prompts={stats.failed_prompts} vs {len(failed)} failed prompts; count them from the same rows")
    commit = ShardCommit(
        run_id=run_id, shard_id=shard_id, attempt_id=written.attempt_id, data_path=written.data_path,
        row_count=written.row_count, size_bytes=written.size_bytes, sha256=written.sha256,
        schema_hash=trace_schema_hash(), prompt_ids=list(prompt_ids), failed=list(failed), stats=stats,
        committed_at=datetime.now(timezone.utc), plan_hash=plan_hash, teacher_revision=teacher_revision,
    )
    rel = commit_path(shard_id)
    if storage.put_if_absent(rel, _dump(commit)):
        _recheck_data(storage, commit)
        return commit
    winner = _parse_commit(storage, rel, storage.read_bytes(rel))
    if winner.run_id != run_id:
        raise CommitError(f"{storage.uri_of(rel)} belongs to run {winner.run_id!r}, not {run_id!r}: two runs share "
                          f"the output root {storage.uri}; give each run its own output.uri")
    if winner.data_path != written.data_path:
        log.info("shard %s: attempt %s lost the commit to %s; deleting %s", shard_id, written.attempt_id,
                 winner.attempt_id, written.data_path)
        storage.delete(written.data_path)
    return winner


def _recheck_data(storage: Storage, commit: ShardCommit) -> None:
    """After our commit landed: our data object must still be there, else withdraw the commit (nobody else can
    have created it: it names our attempt) so that no commit names a missing object."""
    try:
        size = storage.size(commit.data_path)
    except FileNotFoundError:
        size = None
    if size == commit.size_bytes:
        return
    storage.delete(commit_path(commit.shard_id))
    state = "is gone" if size is None else f"has {size} bytes, not {commit.size_bytes}"
    raise CommitError(f"shard {commit.shard_id}: data object {storage.uri_of(commit.data_path)} {state} right after its "
                      f"commit (was `potstill gc --force` run beside a live writer?); the commit was withdrawn and the "
                      f"unit will be generated again")


def read_commit(storage: Storage, shard_id: str) -> ShardCommit | None:
    """The shard's commit, or None when it is not committed."""
    rel = commit_path(shard_id)
    try:
        return _parse_commit(storage, rel, storage.read_bytes(rel))
    except FileNotFoundError:
        return None


def committed_shard_ids(storage: Storage) -> set[str]:
    """Ids of committed shards (one listing; a commit object is visible only once complete).

    Locally the flat commits/ folder is read by name only: a size and time per
    entry (what `Storage.list` gathers) would cost more than the listing itself
    at 100,000 commits, on every poll of a follow-mode job.
    """
    if not storage.remote:
        try:
            names = os.listdir(storage.path(COMMITS_DIR))
        except FileNotFoundError:
            return set()
        return {name[:-len(".json")] for name in names if name.endswith(".json")}
    return {rel[len(COMMITS_DIR) + 1:-len(".json")] for rel in storage.list(COMMITS_DIR)
            if rel.endswith(".json") and rel.count("/") == 1}


def read_commits(storage: Storage, shard_ids: Iterable[str] | None = None) -> dict[str, ShardCommit]:
    """Commits of the run (or only of `shard_ids`, all committed), keyed and sorted by shard id (plan order)."""
    ids = sorted(committed_shard_ids(storage) if shard_ids is None else shard_ids)
    raw = storage.read_many([commit_path(s) for s in ids])
    commits = {}
    for shard_id in ids:
        rel = commit_path(shard_id)
        commit = _parse_commit(storage, rel, raw[rel])
        if commit.shard_id != shard_id:
            raise CommitError(f"{storage.uri_of(rel)} names shard {commit.shard_id!r}; a commit must be stored as "
                              f"commits/<its shard_id>.json (was it copied or renamed by hand?)")
        commits[shard_id] = commit
    return commits


# ---- finalize -------------------------------------------------------------

def _success_bytes(run_id: str, manifest_bytes: bytes) -> bytes:
    body = {"run_id": run_id, "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest()}
    return json.dumps(body, sort_keys=True).encode() + b"\n"


def _conflict(storage: Storage, rel: str, run_id: str) -> CommitError:
    return CommitError(f"{storage.uri_of(rel)} already exists with different content than run {run_id!r} produces "
                       f"now: the output root was finalized by a different run or config. Use a fresh output.uri "
                       f"(or run_id), or delete {rel} deliberately if you know the old one is wrong")


def _create_or_match(storage: Storage, rel: str, data: bytes, run_id: str) -> None:
    """Create `rel` with `data`, or accept it if it already holds exactly `data`."""
    if not storage.put_if_absent(rel, data):
        raise _conflict(storage, rel, run_id)


def _data_sizes(storage: Storage, commits: list[ShardCommit]) -> dict[str, int]:
    """Sizes of the committed data objects that exist: on S3 one listing of data/ (cheaper than a HEAD each);
    locally one stat per committed object (cheaper than walking a folder per shard)."""
    if storage.remote:
        return {info.rel: info.size for info in storage.list_info(DATA_DIR)}
    sizes = {}
    for c in commits:
        try:
            sizes[c.data_path] = os.stat(storage.path(c.data_path)).st_size
        except FileNotFoundError:
            continue
    return sizes


def _check_data_objects(storage: Storage, commits: list[ShardCommit]) -> None:
    sizes = _data_sizes(storage, commits)
    for c in commits:
        if sizes.get(c.data_path) != c.size_bytes:
            state = "is missing" if c.data_path not in sizes else f"has {sizes[c.data_path]} bytes, not {c.size_bytes}"
            raise CommitError(f"shard {c.shard_id}: committed data object {storage.uri_of(c.data_path)} {state}; "
                              f"it was changed outside potstill. Delete {commit_path(c.shard_id)} and re-run the "
                              f"generation with the same run_id to regenerate that shard")


def _same_but_scaling(existing: bytes, manifest: RunManifest) -> RunManifest | None:
    """The stored manifest if it equals `manifest` in everything but `scaling`, else None."""
    try:
        stored = RunManifest.model_validate_json(existing)
    except ValidationError:
        return None
    if stored.model_dump(exclude={"scaling"}) != manifest.model_dump(exclude={"scaling"}):
        return None
    return stored


def _check_provenance(run_id: str, ordered: list[ShardCommit], plan_hash: str, revision: str | None) -> None:
    for c in ordered:
        if c.plan_hash is not None and c.plan_hash != plan_hash:
            raise CommitError(f"cannot finalize run {run_id!r}: shard {c.shard_id} was committed from plan "
                              f"{c.plan_hash[:12]}…, the run's plan is {plan_hash[:12]}…; the prompts changed under the "
                              "run. Start a new run (new --run-id and --out)")
        if c.plan_hash is not None and c.teacher_revision != revision:
            raise CommitError(f"cannot finalize run {run_id!r}: shard {c.shard_id} was generated by teacher revision "
                              f"{c.teacher_revision!r}, the run's teacher is {revision!r}; start a new run for a new teacher")


def finalize_run(storage: Storage, run_id: str, config_fingerprint: str, teacher_model: str,
                 teacher_revision: str | None, planned_shard_ids: list[str], *,
                 plan_hash: str | None = None, scaling: list[ScalingAttempt] | None = None) -> RunManifest:
    """Write manifest.json then _SUCCESS for a run whose planned shards are all committed.

    Idempotent: the bytes depend only on the commits and the arguments, so a
    second call is a no-op; different existing content raises CommitError.
    With `plan_hash`, every commit must come from that plan and from
    `teacher_revision` (commits of older potstill versions carry neither).
    `scaling` (the replica pool over time) is informational: a manifest that
    differs from this one only there is kept as it is.
    """
    if not planned_shard_ids:
        raise ValueError(f"run {run_id!r}: planned_shard_ids is empty; a run needs at least one shard to finalize")
    if len(set(planned_shard_ids)) != len(planned_shard_ids):
        raise ValueError(f"run {run_id!r}: planned_shard_ids has duplicates; pass the plan's shard ids once each")
    commits = read_commits(storage)
    missing = [s for s in planned_shard_ids if s not in commits]
    if missing:
        raise CommitError(f"cannot finalize run {run_id!r}: {len(missing)} of {len(planned_shard_ids)} planned shards "
                          f"are not committed (first: {missing[:3]}). Re-run the generation with the same run_id: "
                          f"committed shards are skipped and the rest are produced")
    unplanned = sorted(set(commits) - set(planned_shard_ids))
    if unplanned:
        raise CommitError(f"cannot finalize run {run_id!r}: {storage.uri}/{COMMITS_DIR} holds commits for shards not in "
                          f"the plan (first: {unplanned[:3]}); the output root holds another plan's shards. Use a fresh output.uri")
    ordered = [commits[s] for s in planned_shard_ids]
    foreign = [c.shard_id for c in ordered if c.run_id != run_id]
    if foreign:
        raise CommitError(f"cannot finalize run {run_id!r}: shards {foreign[:3]} were committed by another run; use a fresh output.uri")
    if plan_hash is not None:
        _check_provenance(run_id, ordered, plan_hash, teacher_revision)
    hashes = {c.schema_hash for c in ordered}
    if hashes != {trace_schema_hash()}:
        raise CommitError(f"cannot finalize run {run_id!r}: shards use trace schema hashes {sorted(hashes)}, this potstill "
                          f"writes {trace_schema_hash()}; finish the run with the potstill version that started it")
    _check_data_objects(storage, ordered)
    sums = dict.fromkeys(ShardStats.model_fields, 0)  # plain ints: one model at the end, not one per shard
    for c in ordered:
        for key, value in c.stats:
            sums[key] += value
    totals = ShardStats(**sums)
    manifest = RunManifest(
        run_id=run_id, config_fingerprint=config_fingerprint, schema_hash=trace_schema_hash(),
        teacher_model=teacher_model, teacher_revision=teacher_revision, plan_hash=plan_hash,
        shards=[ManifestShard(shard_id=c.shard_id, data_path=c.data_path, row_count=c.row_count,
                              size_bytes=c.size_bytes, sha256=c.sha256) for c in ordered],
        totals=totals, failed=[f for c in ordered for f in c.failed],
        finished_at=max(c.committed_at for c in ordered), scaling=list(scaling or []),
    )
    manifest_bytes = _dump(manifest)
    if storage.exists(MANIFEST):
        existing = storage.read_bytes(MANIFEST)
        if existing != manifest_bytes:
            kept = _same_but_scaling(existing, manifest)
            if kept is None:
                raise _conflict(storage, MANIFEST, run_id)  # before failures.jsonl is touched
            manifest, manifest_bytes = kept, existing
    if any(c.failed for c in ordered):
        lines = [json.dumps({"shard_id": c.shard_id, **f.model_dump()}, sort_keys=True) for c in ordered for f in c.failed]
        storage.put(FAILURES, ("\n".join(lines) + "\n").encode())
    _create_or_match(storage, MANIFEST, manifest_bytes, run_id)
    _create_or_match(storage, SUCCESS, _success_bytes(run_id, manifest_bytes), run_id)
    return manifest


# ---- readers --------------------------------------------------------------

def read_manifest(uri: str, storage_cfg: StorageConfig | None = None) -> RunManifest:
    """The finished run's manifest; RunNotFinishedError names what is missing and how to finish it."""
    storage = Storage(uri, storage_cfg)
    missing = [name for name in (MANIFEST, SUCCESS) if not storage.exists(name)]
    if missing:
        raise RunNotFinishedError(
            f"{storage.uri} is not a finished run: {' and '.join(missing)} missing. Re-run the generation with the "
            f"same run_id to finish and finalize it (committed shards are kept), or read the committed shards of a "
            f"live run with committed_data_files()")
    data = storage.read_bytes(MANIFEST)
    try:
        manifest = RunManifest.model_validate_json(data)
    except ValidationError as exc:
        raise CommitError(f"{storage.uri_of(MANIFEST)} is not a valid run manifest: {exc.errors()[0]['loc']}: "
                          f"{exc.errors()[0]['msg']}") from exc
    if storage.read_bytes(SUCCESS) != _success_bytes(manifest.run_id, data):
        raise CommitError(f"{storage.uri_of(SUCCESS)} does not match {MANIFEST} (manifest changed after finalize); "
                          f"delete both and re-run the generation with the same run_id to re-finalize")
    return manifest


def committed_data_files(uri: str, storage_cfg: StorageConfig | None = None) -> list[str]:
    """Full URIs of committed data objects in shard order: the manifest's if finished, else every commit's."""
    storage = Storage(uri, storage_cfg)
    if storage.exists(SUCCESS):
        return [storage.uri_of(s.data_path) for s in read_manifest(uri, storage_cfg).shards]
    return [storage.uri_of(c.data_path) for c in read_commits(storage).values()]


# ---- garbage collection ---------------------------------------------------

ATTEMPT_OBJECT = re.compile(r"data/(?P<shard>[A-Za-z0-9][A-Za-z0-9._-]*)/(?P<attempt>[0-9a-f]{32})\.parquet")
"""The only objects gc ever deletes: an attempt's data object, data/<shard_id>/<attempt uuid hex>.parquet."""


@dataclass
class GcReport:
    """What gc_run removed (or, with dry_run, would remove), and what it left and why."""

    removed: list[str] = field(default_factory=list)  # relative paths of orphan data objects
    bytes_freed: int = 0
    kept: int = 0  # committed data objects
    skipped_recent: list[str] = field(default_factory=list)  # orphans younger than min_age_s (store clock)
    skipped_live: list[str] = field(default_factory=list)  # attempts of uncommitted shards of an unfinished run
    foreign: list[str] = field(default_factory=list)  # files under data/ potstill did not name: never touched
    incomplete: list[str] = field(default_factory=list)  # aborted uploads / temp files
    finished: bool = False
    forced: bool = False
    dry_run: bool = False


def _collectable(shard: str, commits: dict[str, ShardCommit], finished: bool, force: bool) -> bool:
    """Whether an uncommitted attempt of `shard` can never be committed any more (or the caller says no writer runs).

    Commits are conditional creates and never removed, so once a shard's commit names another attempt, this one
    can only lose; in a finished run every planned shard is committed.
    """
    return shard in commits or finished or force


def gc_run(uri: str, storage_cfg: StorageConfig | None = None, dry_run: bool = False, *, min_age_s: float = 0.0,
           force: bool = False) -> GcReport:
    """Remove attempt objects no commit (or manifest) names and none ever can; committed objects are never touched.

    Refuses (NotARunError) a folder without potstill's run.json. In an
    unfinished run, attempts of shards that have no commit yet are kept: a
    live or paused writer may still commit them. `force=True` removes those
    too; use it only when no writer of the run is running. Only objects older
    than `min_age_s` by the store's clock are removed.
    """
    storage = Storage(uri, storage_cfg)
    require_run(storage, "gc")
    report = GcReport(dry_run=dry_run, forced=force, finished=storage.exists(SUCCESS))
    commits = read_commits(storage)
    keep = {c.data_path for c in commits.values()}
    if storage.exists(MANIFEST):
        keep |= {s.data_path for s in RunManifest.model_validate_json(storage.read_bytes(MANIFEST)).shards}
    now = storage.store_now().timestamp()
    for info in storage.list_info(DATA_DIR):
        match = ATTEMPT_OBJECT.fullmatch(info.rel)
        if match is None:
            report.foreign.append(info.rel)
        elif info.rel in keep:
            report.kept += 1
        elif not _collectable(match["shard"], commits, report.finished, force):
            report.skipped_live.append(info.rel)
        elif now - info.modified.timestamp() < min_age_s:
            report.skipped_recent.append(info.rel)
        else:
            report.removed.append(info.rel)
            report.bytes_freed += info.size
            if not dry_run:
                storage.delete(info.rel)
    for write in storage.incomplete(DATA_DIR):
        report.incomplete += _discard_incomplete(storage, write, commits, report, now, min_age_s)
    return report


def _discard_incomplete(storage: Storage, write: IncompleteWrite, commits: dict[str, ShardCommit], report: GcReport,
                        now: float, min_age_s: float) -> list[str]:
    match = ATTEMPT_OBJECT.fullmatch(write.target)
    if match is None or not _collectable(match["shard"], commits, report.finished, report.forced):
        return []
    if now - write.started.timestamp() < min_age_s:
        return []
    if not report.dry_run:
        storage.discard(write)
    return [write.describe()]
