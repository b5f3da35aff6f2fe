"""`<storage_path>/<name>/potstill_job.json`: what a training job trains, so a resume cannot silently change it.

    claim_job(cfg, data_files, follow)      # the driver, before the trainer starts

A re-run of the same `name` resumes from the job's latest checkpoint. Before
that, the record written by the first run is compared with this run's: the
training config (student, packing, loss, optimizer and schedule, run length
and batch sizes, strategy, data filters), the worker count (a checkpoint's
position in an epoch counts each worker's micro-batches) and the data (the
committed files of the runs, or the runs followed). A difference is refused
before any worker starts, naming each changed field and the two ways out:
restore it, or train under a new name. Settings that do not change what is
trained (checkpoint cadence and retention, failure budget, CPU binding,
evaluation, polling, the storage endpoint) may change freely. A job that
never saved a checkpoint has nothing to resume: its record is replaced.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from potstill.pipelines.output.storage import Storage
from potstill.schemas.training import TrainingConfig

JOB_RECORD = "potstill_job.json"
FREE_TO_CHANGE = {
    "name": None, "eval": None, "faults": None,
    "checkpoint": None,
    "scaling": {"use_gpu", "cpus_per_worker", "bind_cpu_cores"},
    "data": {"runs", "storage", "follow_poll_s", "follow_idle_timeout_s"},
}
"""Config parts a resume may change (None: the whole section); `data.runs` is compared as the data itself."""


class JobConflictError(ValueError):
    """A re-run of a training job would resume it with a different config, worker count or data."""


def trained_config(cfg: TrainingConfig) -> dict[str, Any]:
    """The parts of the config that decide what is trained, as flat dotted keys."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    for section, value in cfg.model_dump(mode="json").items():
        free = FREE_TO_CHANGE.get(section, set())
        if free is None:
            continue
        if isinstance(value, dict):
            walk({k: v for k, v in value.items() if k not in free}, f"{section}.")
        else:
            flat[section] = value
    return flat


def data_identity(cfg: TrainingConfig, data_files: list[str], follow: bool) -> dict[str, Any]:
    """What data the job trains on: the runs it follows, or the committed files it read (their digest)."""
    runs = [Storage(uri, cfg.data.storage).uri for uri in cfg.data.runs]
    if follow:
        return {"follow": runs}
    digest = hashlib.sha256("\n".join(data_files).encode()).hexdigest()
    return {"runs": runs, "files": len(data_files), "files_sha256": digest}


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    keys = sorted(set(before) | set(now))
    return [f"{k}: {before.get(k, '(unset)')!r} -> {now.get(k, '(unset)')!r}" for k in keys if before.get(k) != now.get(k)]


def _has_checkpoint(store: Storage) -> bool:
    return any(name.startswith("checkpoint_") for name in store.top_level(limit=1000))


def claim_job(cfg: TrainingConfig, data_files: list[str], follow: bool) -> dict[str, Any]:
    """Write the job record, or check that a resumed job trains what it trained before; returns the record."""
    store = Storage(f"{cfg.checkpoint.storage_path.rstrip('/')}/{cfg.name}", cfg.data.storage)
    record = {"name": cfg.name, "config": trained_config(cfg), "workers": cfg.scaling.num_workers,
              "data": data_identity(cfg, data_files, follow)}
    data = json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"
    if store.put_if_absent(JOB_RECORD, data):
        return record
    before = json.loads(store.read_bytes(JOB_RECORD))
    if before == record:
        return record
    if not _has_checkpoint(store):  # nothing was saved: a fresh start under the same name
        store.put(JOB_RECORD, data)
        return record
    changes = _differences(before.get("config", {}), record["config"])
    if before.get("workers") != record["workers"]:
        changes.append(f"scaling.num_workers: {before.get('workers')!r} -> {record['workers']!r} (a checkpoint's place in "
                       "an epoch counts each worker's micro-batches)")
    if before.get("data") != record["data"]:
        changes.append(f"data: {_describe(before.get('data'))} -> {_describe(record['data'])}")
    raise JobConflictError(
        f"name: training job {cfg.name!r} in {store.uri} has checkpoints of a different job; resuming would mix two "
        f"trainings. Changed: {'; '.join(changes)}. Restore those settings to resume, or train under a new --name")


def _describe(data: dict[str, Any] | None) -> str:
    if not data:
        return "(unknown)"
    if "follow" in data:
        return f"following {data['follow']}"
    return f"{data['files']} committed files of {data['runs']} (sha256 {data['files_sha256'][:12]}…)"
