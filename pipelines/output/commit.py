"""The exactly-once commit protocol over a run output root (local folder or S3, no rename needed).

    written = write_shard(storage, run_id, shard_id, table)            # data/<shard>/<attempt>.parquet
    commit = commit_shard(storage, written, run_id, shard_id, prompt_ids, failed, stats)
    finalize_run(storage, run_id, fingerprint, model, revision, plan.shard_ids)

A shard exists for readers once `commits/<shard_id>.json` exists; it is
created conditionally, so of racing attempts exactly one wins and the losers
delete their own data objects. `manifest.json` then `_SUCCESS` (also
conditional creates, deterministic bytes) mark a finished run. `gc_run`
removes data objects no commit names. Readers use `committed_data_files`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pydantic import ValidationError

from potstill.pipelines.output.shard_writer import WrittenShard, data_path_for
from potstill.pipelines.output.storage import Storage
from potstill.schemas.manifest import FailedPrompt, ManifestShard, RunManifest, ShardCommit, ShardStats
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
                 failed: list[FailedPrompt], stats: ShardStats) -> ShardCommit:
    """Make `written` the shard's data, unless another attempt committed first.

    Returns the commit that is in force: ours, or the winner's (then our data
    object is deleted, unless it is the one the winner names, i.e. this is a
    repeated commit of the same attempt).
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
        committed_at=datetime.now(timezone.utc),
    )
    rel = commit_path(shard_id)
    if storage.put_if_absent(rel, _dump(commit)):
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


def committed_shard_ids(storage: Storage) -> set[str]:
    """Ids of committed shards (one listing; a commit object is visible only once complete)."""
    return {rel[len(COMMITS_DIR) + 1:-len(".json")] for rel in storage.list(COMMITS_DIR)
            if rel.endswith(".json") and rel.count("/") == 1}


def read_commits(storage: Storage) -> dict[str, ShardCommit]:
    """Every commit of the run, keyed and sorted by shard id (zero-padded ids sort in plan order)."""
    ids = sorted(committed_shard_ids(storage))
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


def _check_data_objects(storage: Storage, commits: list[ShardCommit]) -> None:
    sizes = {info.rel: info.size for info in storage.list_info(DATA_DIR)}
    for c in commits:
        if sizes.get(c.data_path) != c.size_bytes:
            state = "is missing" if c.data_path not in sizes else f"has {sizes[c.data_path]} bytes, not {c.size_bytes}"
            raise CommitError(f"shard {c.shard_id}: committed data object {storage.uri_of(c.data_path)} {state}; "
                              f"it was changed outside potstill. Delete {commit_path(c.shard_id)} and re-run the "
                              f"generation with the same run_id to regenerate that shard")


def finalize_run(storage: Storage, run_id: str, config_fingerprint: str, teacher_model: str,
                 teacher_revision: str | None, planned_shard_ids: list[str]) -> RunManifest:
    """Write manifest.json then _SUCCESS for a run whose planned shards are all committed.

    Idempotent: the bytes depend only on the commits and the arguments, so a
    second call is a no-op; different existing content raises CommitError.
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
    hashes = {c.schema_hash for c in ordered}
    if hashes != {trace_schema_hash()}:
        raise CommitError(f"cannot finalize run {run_id!r}: shards use trace schema hashes {sorted(hashes)}, this potstill "
                          f"writes {trace_schema_hash()}; finish the run with the potstill version that started it")
    _check_data_objects(storage, ordered)
    totals = ShardStats()
    for c in ordered:
        totals = totals + c.stats
    manifest = RunManifest(
        run_id=run_id, config_fingerprint=config_fingerprint, schema_hash=trace_schema_hash(),
        teacher_model=teacher_model, teacher_revision=teacher_revision,
        shards=[ManifestShard(shard_id=c.shard_id, data_path=c.data_path, row_count=c.row_count,
                              size_bytes=c.size_bytes, sha256=c.sha256) for c in ordered],
        totals=totals, failed=[f for c in ordered for f in c.failed],
        finished_at=max(c.committed_at for c in ordered),
    )
    manifest_bytes = _dump(manifest)
    if storage.exists(MANIFEST) and storage.read_bytes(MANIFEST) != manifest_bytes:
        raise _conflict(storage, MANIFEST, run_id)  # before failures.jsonl is touched
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

@dataclass
class GcReport:
    """What gc_run removed (or, with dry_run, would remove)."""

    removed: list[str] = field(default_factory=list)  # relative paths of orphan data objects
    bytes_freed: int = 0
    kept: int = 0  # committed data objects
    skipped_recent: list[str] = field(default_factory=list)  # orphans younger than min_age_s
    incomplete: list[str] = field(default_factory=list)  # aborted uploads / temp files
    dry_run: bool = False


def gc_run(uri: str, storage_cfg: StorageConfig | None = None, dry_run: bool = False, *, min_age_s: float = 0.0) -> GcReport:
    """Remove data objects that no commit (or manifest) names; committed objects are never touched.

    An attempt's object exists before its commit, so on a live run pass
    `min_age_s` longer than a shard's write+commit time (the default 0 is
    for runs with no writer running).
    """
    storage = Storage(uri, storage_cfg)
    keep = {c.data_path for c in read_commits(storage).values()}
    if storage.exists(MANIFEST):
        keep |= {s.data_path for s in RunManifest.model_validate_json(storage.read_bytes(MANIFEST)).shards}
    report = GcReport(dry_run=dry_run)
    cutoff = datetime.now(timezone.utc).timestamp() - min_age_s
    for info in storage.list_info(DATA_DIR):
        if info.rel in keep:
            report.kept += 1
        elif info.modified.timestamp() > cutoff:
            report.skipped_recent.append(info.rel)
        else:
            report.removed.append(info.rel)
            report.bytes_freed += info.size
            if not dry_run:
                storage.delete(info.rel)
    report.incomplete = storage.clean_incomplete(DATA_DIR, min_age_s, dry_run)
    return report
