"""`run.json`: binds an output root to one run id, config, plan and teacher.

    record = open_run(storage, cfg, run_id, plan)     # the controller, before any work
    record = read_run_record(storage)                 # replicas, gc, readers

The first run to use an output root claims it (conditional create), after
checking that the root is empty: potstill never writes into, or later
garbage-collects, a folder that holds someone else's files. The record pins
the planned prompts (`plan.hash`) and the teacher (its revision, computed
once per run, and the model folder's file listing). A re-run with the same
run id resumes only if config, plan and teacher are unchanged; anything
else is refused before any work, naming what differs, so one root never
mixes two configs, two prompt sets or two teachers. Secrets in the config
(endpoint passwords, tokens in `engine_kwargs`) are redacted before the
record is written.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import ValidationError

from potstill.pipelines.generate.plan import RunPlan
from potstill.pipelines.models.assets import pin_teacher, teacher_difference
from potstill.pipelines.observe.redact import redact_config
from potstill.pipelines.output.storage import PROBE_PREFIX, TEMP_SUFFIX, Storage
from potstill.schemas.generation import GenerationConfig
from potstill.schemas.manifest import PlanRecord, RunRecord

RUN_RECORD = "run.json"


class RunConflictError(ValueError):
    """The output root already belongs to another run, config, plan or teacher, or to no potstill run at all."""


class NotARunError(FileNotFoundError):
    """The folder has no potstill `run.json` (so potstill will not act on it)."""


def read_run_record(storage: Storage) -> RunRecord | None:
    """The root's run record; None when there is no run.json. NotARunError when run.json is not potstill's."""
    try:
        data = storage.read_bytes(RUN_RECORD)
    except FileNotFoundError:
        return None
    try:
        return RunRecord.model_validate_json(data)
    except ValidationError as exc:
        raise NotARunError(f"{storage.uri_of(RUN_RECORD)} is not a potstill run record ({exc.errors()[0]['loc']}: "
                           f"{exc.errors()[0]['msg']}); this folder was not made by `potstill generate`") from None


def require_run(storage: Storage, what: str) -> RunRecord:
    """The root's run record, or NotARunError naming `what` would have acted on a folder that is not a run."""
    record = read_run_record(storage)
    if record is None:
        raise NotARunError(f"{storage.uri} has no run.json: it is not a potstill run output root, so {what} will not "
                           "touch it. Check the path (it is the folder `potstill generate --out` wrote)")
    return record


def _plan_difference(before: PlanRecord, now: PlanRecord) -> str:
    old, new = before.shard_ids, now.shard_ids
    counts = (f"{before.prompts} prompts in {len(old)} shards when the run started, {now.prompts} prompts in "
              f"{len(new)} shards now")
    first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), None)
    if first is not None:
        where = f"first different shard: #{first} ({old[first]} then, {new[first]} now)"
    elif len(old) != len(new):
        where = f"the first {min(len(old), len(new))} shards are the same, then the plan {'grew' if len(new) > len(old) else 'shrank'}"
    else:
        where = "the same prompts, but a reference answer or a per-prompt max_tokens changed"
    return f"{counts}; {where}"


def _refuse(storage: Storage, run_id: str, why: str) -> RunConflictError:
    return RunConflictError(f"output.uri: run {run_id!r} in {storage.uri}: {why}. Resuming would mix traces of two "
                            "setups in one run; restore what changed, or start a new run (new --run-id and --out)")


COMMAND_LOGS = "logs"
"""The folder of a run's output where the CLI's command sessions keep their log files."""


def _check_empty(storage: Storage) -> None:
    # A probe, the temp file of a run.json create that crashed, or the log folder of the command that is about to
    # write the run (potstill/cli/session.py) is potstill's own, not the user's.
    found = [name for name in storage.top_level()
             if not name.startswith(PROBE_PREFIX) and not name.endswith(TEMP_SUFFIX) and name != COMMAND_LOGS]
    if found:
        raise RunConflictError(
            f"output.uri: {storage.uri} is not empty ({', '.join(found[:5])}{' ...' if len(found) > 5 else ''}) and "
            "holds no potstill run.json; potstill writes a run only into an empty folder or its own run's folder. "
            "Choose a new --out (e.g. a subfolder)")


def open_run(storage: Storage, cfg: GenerationConfig, run_id: str, plan: RunPlan) -> RunRecord:
    """Claim the root for this run (or check a resumed run is the same run); returns the record in force.

    The teacher revision is computed here, once per run (reused on a resume
    when the model folder's listing is unchanged); replicas check their copy
    against the record instead of hashing the weights again.
    """
    existing = read_run_record(storage)
    if existing is None:
        _check_empty(storage)
    pinned = pin_teacher(cfg.teacher, existing.teacher if existing else None)
    record = RunRecord(
        run_id=run_id, config_fingerprint=cfg.fingerprint(), config=redact_config(cfg.model_dump(mode="json")),
        plan=PlanRecord(hash=plan.plan_hash, prompts=plan.total_prompts, shard_ids=list(plan.shard_ids)),
        teacher=pinned, created_at=datetime.now(timezone.utc),
    )
    if existing is None:
        if storage.put_if_absent(RUN_RECORD, record.model_dump_json(indent=2).encode() + b"\n"):
            return record
        existing = read_run_record(storage)  # another driver claimed it first: check against theirs
        assert existing is not None
    if existing.run_id != run_id:
        raise RunConflictError(
            f"output.uri: {storage.uri} already holds run {existing.run_id!r}, not {run_id!r}; pass --run-id "
            f"{existing.run_id} to resume that run, or choose another --out")
    if existing.config_fingerprint != record.config_fingerprint:
        raise _refuse(storage, run_id, "it was made with a different config (prompts, teacher, sampling, verify or "
                                       "shard size changed)")
    if existing.plan is not None and existing.plan.hash != plan.plan_hash:
        raise _refuse(storage, run_id, f"the planned prompts changed: {_plan_difference(existing.plan, record.plan)}")
    if existing.teacher is not None:
        changed = teacher_difference(existing.teacher, pinned)
        if changed is not None:
            raise _refuse(storage, run_id, f"the teacher changed: {changed}")
    # A record of an older potstill lacks the plan or the teacher: this run's stand in (nothing to compare with).
    return existing.model_copy(update={"plan": existing.plan or record.plan, "teacher": existing.teacher or pinned})
