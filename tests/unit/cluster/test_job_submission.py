"""The pure parts of `potstill submit/logs/stop`: where the token comes from (and that it is never shown), which
address is used, what a submitted job's runtime env may carry, attempt ids, and the config shipped to the
cluster (kind detection, pinned run id, absolute local paths). The Jobs API round trip itself runs against a
real `ray start --head` in tests/integration/test_submit.py.

    .venv/bin/pytest tests/unit/cluster/test_job_submission.py -q
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from potstill.cluster.auth_token import AuthToken, TokenError, find_token
from potstill.cluster.job_config import load_job_config, submission_id, with_absolute_paths
from potstill.cluster.job_submission import DEFAULT_ADDRESS, Attempt, job_env, resolve_address
from potstill.schemas import ConfigError, GenerationConfig, validate_config

REPO = Path(__file__).resolve().parents[3]
SECRET = "s3cr3t-token-value"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_token_sources_in_rays_order_after_an_explicit_file(clean_env, monkeypatch):
    home = clean_env / "home" / ".ray"
    assert find_token() is None, "no source: a cluster without token auth needs none"
    home.mkdir(parents=True)
    (home / "auth_token").write_text("from-default\n")
    assert find_token().headers() == {"Authorization": "Bearer from-default"}
    path_file = clean_env / "path-token"
    path_file.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path_file))
    assert find_token().headers()["Authorization"] == "Bearer from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert find_token().source == "RAY_AUTH_TOKEN"
    flag = clean_env / "flag-token"
    flag.write_text(f"  {SECRET}\n")
    token = find_token(str(flag))
    assert token.headers()["Authorization"] == f"Bearer {SECRET}" and token.source.startswith("--token-file")


def test_a_token_is_never_shown(clean_env):
    token = AuthToken("RAY_AUTH_TOKEN", SECRET)
    assert SECRET not in repr(token) and SECRET not in str(token) and SECRET not in f"{token!r} {token}"


def test_unusable_token_files_are_named_with_the_fix(clean_env, monkeypatch):
    with pytest.raises(TokenError, match="--token-file: cannot read the token file .*missing.*; check the path"):
        find_token(str(clean_env / "missing"))
    empty = clean_env / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(empty))
    with pytest.raises(TokenError, match="RAY_AUTH_TOKEN_PATH: the token file .* is empty"):
        find_token()


def test_address_flag_then_api_server_variable_then_an_http_ray_address(clean_env, monkeypatch):
    assert resolve_address(None) == DEFAULT_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # a GCS address, for ray.init: not the Jobs API
    assert resolve_address(None) == DEFAULT_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.5:8265")
    assert resolve_address(None) == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "head.example:8265")
    assert resolve_address(None) == "http://head.example:8265"
    assert resolve_address("https://ray.example") == "https://ray.example"


def test_a_submitted_job_carries_no_aws_setting_or_secret(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    env = job_env()
    assert not any(k.startswith("AWS_") for k in env) and SECRET not in str(env)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert env["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1", "the driver's ray.init repeats these variables"


def test_attempts_are_read_from_potstill_metadata_only():
    details = SimpleNamespace(submission_id=submission_id("generate", "r1", 2), status=SimpleNamespace(value="STOPPED"),
                              metadata={"potstill_run_id": "r1", "potstill_kind": "generate", "potstill_attempt": "2"},
                              message="stopped", start_time=1, end_time=2)
    attempt = Attempt.from_details(details)
    assert (attempt.submission_id, attempt.attempt, attempt.status, attempt.live) == ("potstill-generate-r1-2", 2, "STOPPED", False)
    other = SimpleNamespace(submission_id="raysubmit_x", status="RUNNING", metadata={}, message=None, start_time=1, end_time=None)
    assert Attempt.from_details(other) is None, "jobs not submitted by potstill are not a run's attempts"


def test_job_config_kind_run_id_and_the_yaml_the_cluster_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gen = load_job_config(REPO / "examples" / "arithmetic.yaml", out="runs/x/{run_id}")
    assert gen.kind == "generate" and gen.run_id.startswith("run-") and gen.file_name == "generate.yaml"
    shipped = validate_config(yaml.safe_load(gen.yaml()), GenerationConfig)
    assert shipped.run_id == gen.run_id and shipped.fingerprint() == gen.config.fingerprint()
    local = with_absolute_paths(gen)
    assert local.config.output.uri == str(tmp_path / "runs" / "x" / "{run_id}") and local.run_id == gen.run_id
    assert local.config.teacher.model == "potstill:arithmetic-teacher", "a shipped model name is not a path"
    train = load_job_config(REPO / "examples" / "distill_arithmetic.yaml", run_id="student-2")
    assert (train.kind, train.run_id, train.file_name) == ("train", "student-2", "train.yaml")
    assert with_absolute_paths(train).config.data.runs == [str(tmp_path / "runs" / "arithmetic-demo")]
    odd = tmp_path / "odd.yaml"
    odd.write_text("teacher: {model: x}\n")
    with pytest.raises(ConfigError, match="not a generation config .* nor a training config"):
        load_job_config(odd)


def test_submit_waits_for_the_job_agent_of_a_cluster_that_just_started(monkeypatch):
    """Right after `ray start` the dashboard answers 500 "No available agent" before any job exists: retried;
    any other refusal is reported at once."""
    from potstill.cluster import job_submission
    from potstill.cluster.job_submission import ClusterError, RunJobs

    class Client:  # stands in for JobSubmissionClient's submit_job only (the retry logic is pure)
        def __init__(self, failures: list[str]):
            self.failures, self.calls = failures, 0

        def submit_job(self, **job):
            self.calls += 1
            if self.failures:
                raise RuntimeError(self.failures.pop(0))

    monkeypatch.setattr(job_submission.time, "sleep", lambda s: None)
    jobs = RunJobs.__new__(RunJobs)
    jobs.address, jobs.token = "http://127.0.0.1:8265", None
    agent = "Request failed with status code 500: No available agent to submit job, please try again later."
    jobs.client = Client([agent, agent])
    jobs._submit_when_ready(entrypoint="potstill generate generate.yaml")
    assert jobs.client.calls == 3
    jobs.client = Client(["Request failed with status code 400: bad runtime env", agent])
    with pytest.raises(ClusterError, match="bad runtime env"):
        jobs._submit_when_ready(entrypoint="x")
    assert jobs.client.calls == 1
    jobs.client = Client([agent] * 3)
    with pytest.raises(ClusterError, match="No available agent"):
        jobs._submit_when_ready(wait_s=-1, entrypoint="x")
