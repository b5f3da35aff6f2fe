"""Credentials never reach a log record or an error text: `redact` and the logging filter."""

from __future__ import annotations

import io
import logging

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
