"""Credentials that never pass through the environment stay out of verbose logs: a profile file, IRSA, an instance role.

    .venv/bin/pytest tests/integration/test_secret_sources.py -q

Each case runs a process the way a replica or controller does
(`configure_logging()` at POTSTILL_LOG_LEVEL=DEBUG, then S3 writes and reads
through `Storage` against the moto server) with its credentials from one
source: a shared credentials file with a session token, IRSA (a web identity
token file exchanged at moto's STS for temporary credentials) or an instance
role (moto's instance metadata service). botocore then puts the session token
on every signed request's DEBUG line and the STS reply's secrets in its
response dump; none of those values may appear in the output. The
environment-variable case, and every sink of a real generation (commits,
manifest, `potstill inspect`, Ray's log files), are in
test_chaos_driver.py::test_secret_canary_never_reaches_logs_records_errors_or_rendered_output.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid

import pytest

from potstill.pipelines.output.storage import s3_filesystem
from potstill.schemas.generation import StorageConfig

SCRIPT = """
import logging, sys
from potstill.pipelines.observe.redact import configure_logging
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import StorageConfig
configure_logging()
logging.getLogger("canary").debug("starting with credentials from %s", sys.argv[3])
store = Storage(sys.argv[2], StorageConfig(endpoint_url=sys.argv[1]))
assert store.put_if_absent("commits/x.json", b"{}")
assert store.read_bytes("commits/x.json") == b"{}"
print("DONE", flush=True)
"""


def _run(endpoint: str, uri: str, source: str, env: dict[str, str]) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update(AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                AWS_EC2_METADATA_DISABLED="true", POTSTILL_LOG_LEVEL="DEBUG")
    out = subprocess.run([sys.executable, "-c", SCRIPT, endpoint, uri, source], env={**base, **env},
                         capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "DONE" in text, text[-3000:]
    return text


@pytest.fixture
def bucket(s3_server) -> str:
    name = f"secrets-{uuid.uuid4().hex[:10]}"
    s3_filesystem(StorageConfig(endpoint_url=s3_server)).call_s3("create_bucket", Bucket=name)
    return f"s3://{name}/run"


def _assert_verbose_and_clean(text: str, canaries: dict[str, str]) -> None:
    assert "X-Amz-Security-Token" in text, "the run was not verbose enough to prove anything"
    leaks = [name for name, value in canaries.items() if value in text]
    assert not leaks, f"{leaks} leaked into the DEBUG output"


def test_a_profile_files_session_token_stays_out_of_debug_lines(s3_server, bucket, tmp_path):
    canaries = {"aws_access_key_id": "AKIA" + secrets.token_hex(8).upper(),
                "aws_secret_access_key": "canary-profile-secret-" + secrets.token_hex(8),
                "aws_session_token": "canary-profile-token-" + secrets.token_hex(12)}
    credentials = tmp_path / "credentials"
    credentials.write_text("[canary]\n" + "".join(f"{k} = {v}\n" for k, v in canaries.items()))
    text = _run(s3_server, bucket, "a profile", {"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_PROFILE": "canary"})
    _assert_verbose_and_clean(text, canaries)


def test_irsa_web_identity_and_sts_credentials_stay_out_of_debug_lines(s3_server, bucket, tmp_path):
    token = f"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYW5hcnki{secrets.token_hex(8)}.c2lnbmF0dXJl{secrets.token_hex(8)}"
    token_file = tmp_path / "token"
    token_file.write_text(token)
    text = _run(s3_server, bucket, "IRSA", {"AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/canary",
                                             "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
                                             "AWS_ENDPOINT_URL_STS": s3_server})
    assert "<SessionToken>***</SessionToken>" in text, "STS's reply was not in the DEBUG output"
    from moto.sts.models import sts_backends  # the moto server runs in this process: what it issued

    issued = [role for backend in sts_backends.values() for region in backend.values()
              for role in getattr(region, "assumed_roles", [])]
    assert issued, "moto's STS issued no credentials"
    canaries = {"web identity token": token}
    for i, role in enumerate(issued):
        canaries |= {f"sts session token {i}": role.session_token, f"sts secret {i}": role.secret_access_key}
    _assert_verbose_and_clean(text, canaries)


def test_instance_role_credentials_stay_out_of_debug_lines(s3_server, bucket):
    text = _run(s3_server, bucket, "an instance role", {"AWS_EC2_METADATA_SERVICE_ENDPOINT": s3_server,
                                                         "AWS_EC2_METADATA_DISABLED": "false"})
    # moto's instance metadata service hands out these fixed credentials
    _assert_verbose_and_clean(text, {"secret": "test-secret-key", "session token": "test-session-token"})
