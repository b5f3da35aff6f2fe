"""Credentials never reach a log record or an error text: `redact` and the logging filter."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import pytest

from potstill.pipelines.observe.redact import RedactingFilter, configure_logging, redact


def test_redact_removes_secret_env_values_and_aws_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-0123456789")
    monkeypatch.setenv("HF_TOKEN", "hf_canary_abcdef")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # not a secret: its value must survive
    text = redact("key sk-canary-0123456789 token hf_canary_abcdef id AKIAABCDEFGHIJKLMNOP url http://u:p@host/x false")
    assert "canary" not in text and "AKIA" not in text and "u:p@" not in text
    assert text.endswith("false")


def test_log_records_are_redacted_including_arguments_and_tracebacks(monkeypatch):
    monkeypatch.setenv("POTSTILL_TEACHER_API_KEY", "canary-api-key-42")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("potstill.test-redact")
    logger.addHandler(handler)
    try:
        logger.warning("Authorization: %s", "Credential=AKIAABCDEFGHIJKLMNOP/20260101 key=canary-api-key-42")
        try:
            raise RuntimeError("failed with canary-api-key-42")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "canary-api-key-42" not in out and "AKIAABCDEFGHIJKLMNOP" not in out
    assert "Credential=***" in out and "RuntimeError: failed with ***" in out


def test_configure_logging_rejects_an_unknown_level(monkeypatch):
    monkeypatch.setenv("POTSTILL_LOG_LEVEL", "LOUD")
    with pytest.raises(ValueError, match="POTSTILL_LOG_LEVEL='LOUD' is not a logging level"):
        configure_logging()


def test_credential_forms_are_redacted_whatever_their_source():
    lines = {
        "headers={'X-Amz-Security-Token': b'FwoGZXIvYXdzECanary1', 'Authorization': b'AWS4-HMAC-SHA256 "
        "Credential=ASIAABCDEFGHIJKLMNOP/20260101/us-east-1/s3/aws4_request, Signature=0123456789abcdef0123'}":
            ("FwoGZXIvYXdzECanary1", "ASIAABCDEFGHIJKLMNOP", "0123456789abcdef0123"),
        "b'<Credentials><SessionToken>FQoGcanarySTS</SessionToken><SecretAccessKey>wJalrcanarySecret"
        "</SecretAccessKey></Credentials>'": ("FQoGcanarySTS", "wJalrcanarySecret"),
        '{"AccessKeyId" : "ASIAQWERTYUIOPASDFGH", "SecretAccessKey" : "imdsCanarySecret1", "Token" : "imdsCanaryTok1"}':
            ("ASIAQWERTYUIOPASDFGH", "imdsCanarySecret1", "imdsCanaryTok1"),
        "aws_session_token = iniCanaryToken9": ("iniCanaryToken9",),
        "Authorization: Bearer sk-canary-bearer-1": ("sk-canary-bearer-1",),
        "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlY2FuYXJ5": ("eyJzdWIiOiJjYW5hcnkifQ",),
    }
    for line, secret_parts in lines.items():
        out = redact(line)
        assert not [p for p in secret_parts if p in out], out
    plain = "completion_tokens: 192, max_tokens=1024, prompt_token: 12345678, tokenizer=/models/x"
    assert redact(plain) == plain  # counts and paths named like tokens are not secrets


def test_config_secrets_are_registered_and_redacted_from_run_records():
    from potstill.pipelines.observe.redact import config_secrets, install_redaction, redact_config

    cfg = {"teacher": {"engine_kwargs": {"hf_token": "hf_cfgcanary_123", "trust_remote_code": True}},
           "output": {"storage": {"endpoint_url": "http://minio:pw-cfgcanary-9@h:9000"}}, "sampling": {"max_tokens": 9}}
    assert sorted(config_secrets(cfg)) == ["hf_cfgcanary_123", "pw-cfgcanary-9"]
    stored = redact_config(cfg)
    assert "cfgcanary" not in repr(stored) and stored["sampling"] == {"max_tokens": 9}
    assert stored["teacher"]["engine_kwargs"]["trust_remote_code"] is True
    install_redaction(cfg)
    assert redact("vLLM got hf_cfgcanary_123") == "vLLM got ***"


def test_vllm_records_go_through_potstills_redacting_handler(tmp_path):
    # vLLM applies the dictConfig that configure_logging named in VLLM_LOGGING_CONFIG_PATH: its logger propagates
    # to potstill's one root handler (redacting, potstill's format) instead of printing through its own.
    script = (
        "import logging\n"
        "from potstill.pipelines.observe.redact import configure_logging\n"
        "configure_logging()\n"
        "import vllm.logger\n"
        "from vllm.config.logging import LoggingConfig\n"
        "vllm.logger.configure_logging_if_needed(LoggingConfig())  # what vLLM does when it builds an engine\n"
        "assert logging.getLogger('vllm').propagate and not logging.getLogger('vllm').handlers\n"
        "log = vllm.logger.init_logger('vllm.engine.canary')\n"
        "log.warning('engine args: hf_token=%s', 'hf_vllmcanary_0123456789')\n"
        "try:\n"
        "    raise RuntimeError('failed with hf_vllmcanary_0123456789')\n"
        "except RuntimeError:\n"
        "    log.exception('start failed')\n"
    )
    # A clean environment: what earlier tests left in os.environ (log levels, Ray addresses, other secrets) must
    # not change what this process prints.
    env = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR") if k in os.environ}
    env |= {"POTSTILL_VLLM_TOKEN": "hf_vllmcanary_0123456789", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-2000:]
    assert "engine args" in text and "start failed" in text, text[-2000:]
    assert " vllm.engine.canary WARNING engine args: hf_token=***" in out.stderr, text[-2000:]
    assert "hf_vllmcanary" not in text, text[-2000:]


def test_cli_error_lines_are_redacted(monkeypatch, capsys):
    import typer

    from potstill.cli.common import fail

    monkeypatch.setenv("OPENAI_API_KEY", "sk-clicanary-0123456789")
    with pytest.raises(typer.Exit):
        fail("the endpoint refused key sk-clicanary-0123456789 at http://user:pw-cli@host/v1 [data.runs[0]]")
    err = capsys.readouterr().err
    assert "clicanary" not in err and "pw-cli" not in err and "data.runs[0]" in err
