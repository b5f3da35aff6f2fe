"""Chaos through the CLI: the driver is killed and re-run; verbose failing runs leak no secret.

    .venv/bin/pytest tests/integration/test_chaos_driver.py -q

Each `potstill` command here is a subprocess with its own local Ray, writing
to the moto S3 server, logging at DEBUG with canary credentials in its
environment; the two tests share those runs.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chaos_support, fault_proxy: shared helpers (importlib mode)

from chaos_support import (  # noqa: E402
    PER_SHARD, SHARDS, assert_same_output, chaos_config, finished, new_bucket, question, wait_for,
)
from chaos_support import clean  # noqa: E402,F401 - fixture
from fault_proxy import FaultProxy  # noqa: E402
from process_groups import kill_process_group  # noqa: E402

from potstill.cli.common import last_json_line  # noqa: E402
from potstill.pipelines.output.storage import Storage, filesystem_for  # noqa: E402
from potstill.schemas import StorageConfig  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HUNG_FOR_S = 600  # unit deadline of the killed run: its hung shard stays in flight until the kill


def _cli(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """`potstill ARGS` in its own session (so its local Ray dies with it), output to `log` (never a full pipe)."""
    out = open(log, "wb")
    return subprocess.Popen([sys.executable, "-m", "potstill.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "RAY_ADDRESS": "", **env}, cwd=REPO, start_new_session=True)


def _write_config(path: Path, cfg) -> Path:
    path.write_text(cfg.model_dump_json(exclude={"run_id"}))  # JSON is YAML
    return path


def _canaries() -> dict[str, str]:
    alnum = string.ascii_uppercase + string.digits
    return {
        "AWS_ACCESS_KEY_ID": "AKIA" + "".join(secrets.choice(alnum) for _ in range(16)),
        "AWS_SECRET_ACCESS_KEY": "canary-secret-" + secrets.token_hex(12),
        "AWS_SESSION_TOKEN": "canary-session-" + secrets.token_hex(12),
        "OPENAI_API_KEY": "sk-canary-" + secrets.token_hex(12),
        "POTSTILL_TEACHER_API_KEY": "canary-api-" + secrets.token_hex(12),
    }


@pytest.fixture(scope="module")
def verbose_runs(s3_server, s3_writes_landed, tmp_path_factory):
    """`potstill generate` at DEBUG with canary credentials: killed mid-run, re-run to completion, then a failing run.

    The kill waits for an observed state, not for an ordering: at least one shard committed AND the last shard
    hung in flight. The hang outlasts any wait (its deadline is 10 minutes), so that shard cannot commit before
    the kill, however slowly a loaded machine runs the others: the kill always finds a partial run.
    """
    tmp = tmp_path_factory.mktemp("verbose")
    canaries = _canaries()
    ray_tmp = Path(tempfile.mkdtemp(prefix="pc-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {**canaries, "POTSTILL_LOG_LEVEL": "DEBUG", "RAY_TMPDIR": str(ray_tmp)}
    storage = StorageConfig(endpoint_url=s3_server)
    uri = new_bucket(s3_server, "resume") + "/run"
    faults = {"state_dir": str(tmp / "faults"), "rules": [
        {"action": "hang", "marker": question((SHARDS - 1) * PER_SHARD + 2), "times": 1}]}
    config = _write_config(tmp / "gen.yaml", chaos_config(uri, "chaos-resume", storage, faults=faults,
                                                          replicas={"unit_timeout_s": HUNG_FOR_S}))
    args = ["generate", str(config), "--out", uri, "--run-id", "chaos-resume", "--json"]

    killed = _cli(args, tmp / "killed.log", env)
    try:
        store = Storage(uri, storage)
        wait_for(lambda: killed.poll() is not None or ((tmp / "faults" / "rule0-0").exists() and store.list("commits")),
                 600, "a committed shard while the last one hangs")
        assert killed.poll() is None, (tmp / "killed.log").read_text()[-3000:]
    finally:
        # A replica of the killed driver may still be committing: once no process of its group is alive and no
        # write is in progress on the server, the commits are final.
        kill_process_group(killed)
    s3_writes_landed()
    store = Storage(uri, storage)
    before = {rel: store.read_bytes(rel) for rel in store.list("commits")}

    rerun = _cli([*args, "--verbose"], tmp / "rerun.log", env)  # the engine logs on its terminal too
    assert rerun.wait(timeout=400) == 0, (tmp / "rerun.log").read_text()[-3000:]
    inspect = _cli(["inspect", uri, "--endpoint-url", s3_server, "--json"], tmp / "inspect.log", env)
    assert inspect.wait(timeout=120) == 0, (tmp / "inspect.log").read_text()[-3000:]
    with FaultProxy(s3_server, fail_rate=1.0) as proxy:  # every S3 request answered 503: the run fails
        down = _write_config(tmp / "down.yaml", chaos_config(uri, "chaos-resume", StorageConfig(
            endpoint_url=proxy.url, max_retries=1), faults=faults))
        failed = _cli(["generate", str(down), "--out", uri, "--run-id", "chaos-resume", "--json"], tmp / "failed.log", env)
        failed_rc = failed.wait(timeout=300)
    logs = {name: (tmp / f"{name}.log").read_bytes() for name in ("killed", "rerun", "inspect", "failed")}
    yield {"uri": uri, "storage": storage, "before": before, "logs": logs, "failed_rc": failed_rc,
           "canaries": canaries, "ray_tmp": ray_tmp}
    shutil.rmtree(ray_tmp, ignore_errors=True)  # the runs' Ray logs: outside pytest's tmp_path, which cleans itself


def test_driver_killed_mid_run_and_rerun_with_the_same_run_id_resumes(verbose_runs, clean):
    uri, storage, before = verbose_runs["uri"], verbose_runs["storage"], verbose_runs["before"]
    assert 1 <= len(before) < SHARDS, f"expected a partial run at the kill, found {len(before)} commits"
    summary = last_json_line(verbose_runs["logs"]["rerun"])
    assert summary["shards_skipped"] == len(before)
    # --verbose (and POTSTILL_LOG_LEVEL): the replicas' vLLM logs, in potstill's format, reach the terminal.
    assert re.search(rb"vllm\S* (DEBUG|INFO|WARNING) ", verbose_runs["logs"]["rerun"]), "no engine log on the terminal"
    assert summary["engine_requests"] == PER_SHARD * (SHARDS - len(before))  # only the missing shards ran
    store = Storage(uri, storage)
    assert {rel: store.read_bytes(rel) for rel in before} == before, "a committed shard was rewritten"
    assert_same_output(finished(uri, storage, summary), clean)


def _s3_objects(endpoint: str, uri: str) -> dict[str, bytes]:
    fs, root = filesystem_for(uri, StorageConfig(endpoint_url=endpoint))
    return {path: fs.cat_file(path) for path in fs.find(root)}


def test_secret_canary_never_reaches_logs_records_errors_or_rendered_output(verbose_runs, s3_server):
    logs, canaries, uri = verbose_runs["logs"], verbose_runs["canaries"], verbose_runs["uri"]
    assert verbose_runs["failed_rc"] != 0 and b"StorageUnavailableError" in logs["failed"]
    assert b"Credential=***" in logs["killed"] + logs["rerun"], "the runs were not verbose enough to prove anything"
    texts = {f"{name} output": data for name, data in logs.items()}
    texts.update({f"object {k}": v for k, v in _s3_objects(s3_server, uri).items()})
    assert any(k.endswith("/manifest.json") for k in texts) and any("/commits/" in k for k in texts)
    texts.update({f"ray log {p}": p.read_bytes() for p in verbose_runs["ray_tmp"].rglob("*") if p.is_file()})
    assert any("worker" in k for k in texts), "no Ray worker log was found to scan"
    for name, value in canaries.items():
        leaks = [where for where, data in texts.items() if value.encode() in data]
        assert not leaks, f"{name} leaked into {leaks[:5]}"
