"""`run.json`: binds an output root to one run id and config fingerprint.

The first run to use an output root claims it (conditional create). A re-run
with the same fingerprint resumes; a different config or run id pointed at
the same root is refused before any work, so two runs never mix their shards.
"""

from __future__ import annotations

import json

from potstill.schemas.generation import GenerationConfig

RUN_RECORD = "run.json"


class RunConflictError(ValueError):
    """The output root already belongs to another run or config."""


def claim_run(storage, cfg: GenerationConfig, run_id: str) -> None:
    """Create `run.json` or check that the existing one is this run with this config."""
    record = {"run_id": run_id, "config_fingerprint": cfg.fingerprint(), "config": cfg.model_dump(mode="json")}
    data = json.dumps(record, indent=2, sort_keys=True).encode()
    if storage.put_if_absent(RUN_RECORD, data):
        return
    existing = json.loads(storage.read_bytes(RUN_RECORD))
    if existing.get("run_id") != run_id:
        raise RunConflictError(
            f"output.uri: {storage.uri} already holds run {existing.get('run_id')!r}, not {run_id!r}; "
            "pass --run-id to resume that run, or choose another --out")
    if existing.get("config_fingerprint") != record["config_fingerprint"]:
        raise RunConflictError(
            f"output.uri: run {run_id!r} in {storage.uri} was made with a different config (prompts, teacher, sampling, "
            "verify or shard size changed); resuming would mix traces — use a new --run-id and --out")
