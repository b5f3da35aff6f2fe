"""`potstill submit / logs / stop` against a real `ray start --head` with token authentication on.

A small arithmetic run goes to a committed output through the Jobs API; a second submit while it runs,
and another after it succeeded, start nothing and name the existing job; `potstill logs` shows its
summary. A second run, submitted beside it, cannot finish (one prompt's request hangs: the faults
test hook) and is stopped with `potstill stop` once its other shards committed; submitting it again
(without the hang) starts attempt 2, which resumes: the shards committed before the stop are
skipped, their commit records and data objects untouched. Calls without the token, or with a wrong one, are refused with
the fix, and the token never appears in any output. The cluster is this test's own (temp dir, ports,
process group), stopped by killing its processes, never by `ray stop`.

    .venv/bin/pytest tests/integration/test_submit.py -q
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from potstill.cli.common import last_json_line
from potstill.pipelines.arithmetic.problems import held_out_pairs, question_text

REPO = Path(__file__).resolve().parents[2]
SEED, LONG_PROMPTS, LONG_SHARDS = 7, 40, 5  # 8 prompts a shard
VENV_BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN",
                                                             "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # the job's `potstill` entrypoint: this venv's
    return env


@pytest.fixture(scope="module")
def head():
    """`ray start --head --block` on 127.0.0.1 in its own session, temp dir and ports; yields (dashboard URL, token)."""
    token = secrets.token_hex(16)
    temp = tempfile.mkdtemp(prefix="ps-submit-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    gcs, dash, client, node, obj, agent_grpc, agent_http, metrics, runtime_env = _free_ports(9)
    env = _base_env() | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
           "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
           "--ray-client-server-port", str(client), "--node-manager-port", str(node), "--object-manager-port", str(obj),
           "--dashboard-agent-grpc-port", str(agent_grpc), "--dashboard-agent-listen-port", str(agent_http),
           "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env),
           "--num-cpus", "2", "--temp-dir", temp, "--disable-usage-stats"]
    log = open(Path(temp) / "ray-start.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (Path(temp) / "ray-start.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the Ray dashboard did not come up in 180 s"
            time.sleep(1)
        yield url, token
    finally:
        # Every process this cluster started descends from `ray start`: the job drivers run in sessions of
        # their own, so the process group alone would miss them.
        family = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        for p in family:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(family, timeout=5)
        for p in alive:
            p.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)  # its session logs: outside pytest's tmp_path, which cleans itself


def potstill(*args: str, token: str | None, home: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = _base_env()
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    if home is not None:
        env["HOME"] = str(home)  # no ~/.ray/auth_token of this machine's other clusters
    return subprocess.run([sys.executable, "-m", "potstill.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def write_config(path: Path, run_id: str, out: Path, count: int, per_shard: int, n: int, hang_on: str | None = None) -> Path:
    """An arithmetic generation config; `hang_on`: a prompt whose request never returns (the faults test hook)."""
    faults = {"faults": {"rules": [{"action": "hang", "marker": hang_on}]}} if hang_on else {}
    path.write_text(yaml.safe_dump(faults | {
        "run_id": run_id,
        "prompts": {"arithmetic": {"count": count, "digits": 3, "seed": SEED}},
        "teacher": {"model": "potstill:arithmetic-teacher", "dtype": "float32", "max_model_len": 256, "kv_cache_gib": 1,
                    "engine_kwargs": {"enforce_eager": True}},
        "replicas": {"cpus_per_replica": 1},
        "sampling": {"n": n, "temperature": 0.6, "max_tokens": 192},
        "verify": {"method": "math"},
        "output": {"uri": str(out), "prompts_per_shard": per_shard},
    }))
    return path


def _summary(logs: str) -> tuple[int, int]:
    """(shards, already committed) from the generate command's summary line in a job's logs."""
    match = re.search(r"run \S+: (\d+) shards \((\d+) already committed\)", logs)
    assert match, f"no generation summary in the logs:\n{logs[-3000:]}"
    return int(match.group(1)), int(match.group(2))


def _snapshot(out: Path) -> tuple[dict[str, bytes], dict[str, set[str]]]:
    commits = {p.name: p.read_bytes() for p in (out / "commits").glob("*.json")}
    data = {d.name: {f.name for f in d.iterdir()} for d in (out / "data").iterdir()} if (out / "data").is_dir() else {}
    return commits, data


def test_submit_is_once_per_run_logs_show_it_stop_then_resubmit_resumes(head, tmp_path):
    url, token = head
    outputs: list[str] = []

    def run(*args: str, **kw) -> subprocess.CompletedProcess:
        result = potstill(*args, token=kw.pop("token", token), **kw)
        outputs.append(result.stdout + result.stderr)
        return result

    # Both runs start together (one engine start each, side by side): a small one that runs to the end,
    # and a "long" one that cannot end: one prompt's request hangs (the faults test hook; not part of the
    # config fingerprint), so it is stopped mid-run whatever this machine's speed, and resumed without it.
    small_out, long_out = tmp_path / "small", tmp_path / "long"
    small = write_config(tmp_path / "small.yaml", "submit-small", small_out, count=8, per_shard=4, n=1)
    hung = question_text(*held_out_pairs(LONG_PROMPTS, 3, SEED)[-1])
    long_cfg = write_config(tmp_path / "long.yaml", "submit-long", long_out, LONG_PROMPTS, 8, n=2, hang_on=hung)
    first = run("submit", str(small), "--address", url, "--json")
    assert first.returncode == 0, first.stderr
    first = last_json_line(first.stdout)
    assert (first["action"], first["submission_id"], first["attempt"]) == ("submitted", "potstill-generate-submit-small-1", 1)
    submitted = run("submit", str(long_cfg), "--address", url, "--json")
    assert submitted.returncode == 0, submitted.stderr
    assert last_json_line(submitted.stdout)["submission_id"] == "potstill-generate-submit-long-1"
    again = run("submit", str(small), "--address", url)
    assert again.returncode == 0, again.stderr
    assert "run submit-small is already" in again.stderr and "potstill-generate-submit-small-1" in again.stderr
    assert "nothing new was submitted" in again.stderr

    # ---- the long run: every shard but the hung one commits, then it is stopped ----
    commits_dir = long_out / "commits"
    deadline = time.monotonic() + 600
    while len(list(commits_dir.glob("*.json")) if commits_dir.is_dir() else []) < LONG_SHARDS - 1:
        assert time.monotonic() < deadline, "the long run did not commit its shards in 600 s:\n" + \
            run("logs", "submit-long", "--address", url).stdout[-3000:]
        time.sleep(0.5)
    running = run("submit", str(long_cfg), "--address", url, "--json")
    assert last_json_line(running.stdout)["action"] == "running"
    stopped = run("stop", "submit-long", "--address", url, "--json")
    assert stopped.returncode == 0, stopped.stderr
    stopped = last_json_line(stopped.stdout)
    assert (stopped["action"], stopped["status"], stopped["attempt"]) == ("stopped", "STOPPED", 1)
    commits, data = _snapshot(long_out)
    assert len(commits) == LONG_SHARDS - 1 and not (long_out / "_SUCCESS").exists()
    stop_again = run("stop", "submit-long", "--address", url)
    assert stop_again.returncode == 0 and "has no live job" in stop_again.stderr and "STOPPED" in stop_again.stderr

    # ---- the small run: to a committed output; its logs; a submit after success starts nothing ----
    followed = run("logs", "submit-small", "--follow", "--address", url, timeout=600)
    assert followed.returncode == 0, followed.stderr + followed.stdout[-3000:]
    assert "ended SUCCEEDED" in followed.stderr
    assert _summary(followed.stdout) == (2, 0)
    assert f"output: {small_out}" in followed.stdout
    assert (small_out / "_SUCCESS").exists() and len(list((small_out / "commits").glob("*.json"))) == 2
    done = run("submit", str(small), "--address", url, "--json")
    assert done.returncode == 0, done.stderr
    done = last_json_line(done.stdout)
    assert (done["action"], done["submission_id"], done["status"]) == ("succeeded", "potstill-generate-submit-small-1", "SUCCEEDED")
    logs = run("logs", "submit-small", "--address", url)
    assert logs.returncode == 0 and _summary(logs.stdout) == (2, 0)

    from ray.job_submission import JobSubmissionClient  # the job as the cluster stores it: no credential in its runtime env

    info = JobSubmissionClient(url, headers={"Authorization": f"Bearer {token}"}).get_job_info("potstill-generate-submit-small-1")
    assert os.environ["AWS_SECRET_ACCESS_KEY"]  # the suite's fake credentials are in the submitting environment ...
    env_vars = (info.runtime_env or {}).get("env_vars", {})
    assert not any(k.startswith("AWS_") for k in env_vars), env_vars  # ... and stay out of the job
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in json.dumps(info.runtime_env)
    assert info.metadata["potstill_run_id"] == "submit-small" and info.entrypoint == "potstill generate generate.yaml"

    # ---- the long run again, without the hang: attempt 2 resumes, committed shards untouched ----
    write_config(long_cfg, "submit-long", long_out, LONG_PROMPTS, 8, n=2)
    resumed = run("submit", str(long_cfg), "--address", url, "--json")
    assert resumed.returncode == 0, resumed.stderr
    resumed = last_json_line(resumed.stdout)
    assert (resumed["action"], resumed["submission_id"], resumed["attempt"]) == ("submitted", "potstill-generate-submit-long-2", 2)
    assert resumed["previous"]["status"] == "STOPPED"
    followed = run("logs", "submit-long", "--follow", "--address", url, timeout=900)
    assert followed.returncode == 0, followed.stderr + followed.stdout[-3000:]
    assert _summary(followed.stdout) == (LONG_SHARDS, LONG_SHARDS - 1), "only the shard that hung is generated again"
    assert (long_out / "_SUCCESS").exists()
    after_commits, after_data = _snapshot(long_out)
    assert len(after_commits) == LONG_SHARDS
    for name, record in commits.items():
        assert after_commits[name] == record, f"{name}: a commit made before the stop was rewritten"
        shard = json.loads(record)["shard_id"]
        assert after_data[shard] == data[shard], f"{shard}: the resumed attempt wrote data for a committed shard"
    first_attempt = run("logs", "submit-long", "--attempt", "1", "--address", url)
    assert first_attempt.returncode == 0 and "potstill-generate-submit-long-1" in first_attempt.stderr

    # ---- token authentication: refused without it or with a wrong one, with the fix; never printed ----
    no_token = run("logs", "submit-small", "--address", url, token=None, home=tmp_path)
    assert no_token.returncode == 2 and "token authentication on and no token was sent" in " ".join(no_token.stderr.split())
    wrong = run("logs", "submit-small", "--address", url, token="not-the-token", home=tmp_path)
    assert wrong.returncode == 2 and "refused the token from RAY_AUTH_TOKEN" in " ".join(wrong.stderr.split())
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    by_file = run("logs", "submit-small", "--address", url, "--token-file", str(token_file), token=None, home=tmp_path)
    assert by_file.returncode == 0 and _summary(by_file.stdout) == (2, 0)
    assert not any(token in text for text in outputs), "the token was printed"
