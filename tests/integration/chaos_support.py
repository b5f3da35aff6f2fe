"""Shared pieces of the chaos tests (tests/integration/test_chaos_*.py): configs, readers, the clean baseline.

Every chaos test runs a small generation (50 arithmetic prompts, n=2, 10
prompts per shard: 5 shards) on local Ray and the moto S3 server with faults
injected, then compares the final manifest's (prompt_id, sample_index)
set with the clean baseline's: nothing lost, nothing duplicated. The
baseline run happens once per session, whichever chaos module asks first.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
import pytest

from potstill.pipelines.arithmetic.problems import fresh_problems
from potstill.pipelines.output.commit import committed_data_files, read_manifest
from potstill.pipelines.output.storage import Storage, filesystem_for, s3_filesystem
from potstill.schemas import GenerationConfig, RunManifest, StorageConfig
from potstill.schemas.results import GenerationSummary

COUNT, PER_SHARD, N, SEED = 50, 10, 2, 4321
SHARDS = COUNT // PER_SHARD
DEADLINE_S = 20  # replicas.unit_timeout_s of chaos runs: a hung unit is noticed after this long


def question(i: int) -> str:
    """The text of prompt `i` (plan order): a fault marker that hits exactly that prompt, in shard i // PER_SHARD."""
    return fresh_problems(COUNT, 3, SEED)[i][0]


def chaos_config(uri: str, run_id: str, storage: StorageConfig, *, faults: dict | None = None,
                 replicas: dict | None = None, prompts: dict | None = None) -> GenerationConfig:
    """A small run of the shipped teacher; every chaos run shares its fingerprint-relevant parts with the baseline."""
    return GenerationConfig.model_validate({
        "run_id": run_id,
        "prompts": prompts or {"arithmetic": {"count": COUNT, "digits": 3, "seed": SEED}},
        # enforce_eager: no torch.compile, so each (re)started engine is ready sooner.
        "teacher": {"model": "potstill:arithmetic-teacher", "dtype": "float32", "max_model_len": 256,
                    "engine_kwargs": {"enforce_eager": True}},
        "replicas": {"unit_timeout_s": DEADLINE_S, "max_attempts": 2, **(replicas or {})},
        "sampling": {"n": N, "temperature": 0.6, "max_tokens": 192},
        "verify": {"method": "math"},
        "output": {"uri": uri, "prompts_per_shard": PER_SHARD, "storage": storage.model_dump()},
        "faults": faults,
    })


EXACT_SLOTS = {"min_sequences_in_flight": None}
"""Exactly units_in_flight units per replica (no extra unit when its engine runs low): faults land on a known
schedule, so a test can count restarts exactly, or catch a replica mid-run. The storage and driver chaos
tests run the default admission."""


def new_bucket(endpoint: str, prefix: str = "chaos") -> str:
    """A fresh bucket on the S3 server; returns its s3:// URI root."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    s3_filesystem(StorageConfig(endpoint_url=endpoint)).call_s3("create_bucket", Bucket=name)
    return f"s3://{name}"


def read_keys(uri: str, storage: StorageConfig) -> list[tuple[str, int]]:
    """(prompt_id, sample_index) of every row readers see (what the manifest, or the commits, list)."""
    fs, _ = filesystem_for(uri, storage)
    keys: list[tuple[str, int]] = []
    for path in committed_data_files(uri, storage):
        with fs.open(path.split("://", 1)[1], "rb") as f, pq.ParquetFile(f) as pf:  # not read_table: see Storage.read_table
            table = pf.read(columns=["prompt_id", "sample_index"])
        keys.extend(zip(table.column("prompt_id").to_pylist(), table.column("sample_index").to_pylist()))
    return keys


@dataclass
class Finished:
    """A finished run: where it is, what readers see, and its summary."""

    uri: str
    storage: StorageConfig
    manifest: RunManifest
    keys: list[tuple[str, int]]
    summary: GenerationSummary

    @property
    def key_set(self) -> set[tuple[str, int]]:
        return set(self.keys)

    def prompt_of(self, text: str) -> str:
        """prompt_id of the prompt whose question is `text`."""
        from potstill.schemas import Message, PromptRecord

        return PromptRecord.from_messages([Message(role="user", content=text)], source_row=0).prompt_id


def finished(uri: str, storage: StorageConfig, summary: GenerationSummary) -> Finished:
    return Finished(uri, storage, read_manifest(uri, storage), read_keys(uri, storage), summary)


def assert_same_output(run: Finished, clean: Finished, *, minus: set[str] = frozenset()) -> None:
    """The run's rows are exactly the clean run's (less the prompts in `minus`): nothing lost, nothing duplicated."""
    assert len(run.keys) == len(run.key_set), "duplicated rows"
    expected = {k for k in clean.key_set if k[0] not in minus}
    assert run.key_set == expected, f"lost {len(expected - run.key_set)} rows, extra {len(run.key_set - expected)}"
    assert [s.shard_id for s in run.manifest.shards] == [s.shard_id for s in clean.manifest.shards]
    assert run.manifest.totals.prompts == clean.manifest.totals.prompts
    assert {f.prompt_id for f in run.manifest.failed} == set(minus)


_BASELINE: dict[str, Finished] = {}


def clean_baseline(endpoint: str) -> Finished:
    """The fault-free run every chaos test compares with (run once per session, on whatever Ray is connected)."""
    if endpoint not in _BASELINE:
        from potstill.cluster.connect import ensure_ray
        from potstill.pipelines.jobs.run_generation import run_generation

        ensure_ray()
        storage = StorageConfig(endpoint_url=endpoint)
        uri = new_bucket(endpoint, "clean") + "/traces"
        summary = run_generation(chaos_config(uri, "chaos-clean", storage))
        run = finished(uri, storage, summary)
        assert len(run.keys) == COUNT * N and not run.manifest.failed, "the baseline itself is not clean"
        _BASELINE[endpoint] = run
    return _BASELINE[endpoint]


def wait_for(predicate: Callable[[], Any], limit_s: float, what: str, poll_s: float = 0.1) -> Any:
    """Poll until `predicate()` is truthy; fail naming `what` after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {limit_s:.0f} s waiting for {what}")


def commit_count(uri: str, storage: StorageConfig) -> int:
    return len(Storage(uri, storage).list("commits"))


def replica_handles(run_id: str) -> dict[str, Any]:
    """Live named replica actors of a run by name (the controller names them potstill-<run_id>-<token>-replica-<n>)."""
    import ray

    found = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(f"potstill-{run_id}-") and "-replica-" in actor["name"]:
            try:
                found[actor["name"]] = ray.get_actor(actor["name"], namespace=actor["namespace"])
            except ValueError:  # died between the listing and the lookup
                continue
    return found


@pytest.fixture
def clean(s3_server, ray_local) -> Finished:
    """The clean baseline run (shared by the whole session)."""
    return clean_baseline(s3_server)
