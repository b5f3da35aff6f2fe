"""Keep credentials out of logs and records: `redact(text)`, `redact_config(cfg)` and scrubbed process logging.

    configure_logging(cfg.model_dump())   # once per process (controller, replicas, training workers)
    install_redaction(cfg.model_dump())   # the CLI and job drivers: records redacted, levels and handlers untouched
    reason = redact(str(exc))             # before an error text goes into a commit record, manifest or CLI line
    record = redact_config(cfg_dict)      # a config as stored in run.json: secret-named values become ***

What `redact` removes:

- values: every environment variable named like a secret (`*_API_KEY`,
  `*_TOKEN`, `*_SECRET`, `*_PASSWORD`, `*_CREDENTIALS`, AWS keys, ...); the
  keys and tokens in the AWS shared credentials and config files (a
  profile's `aws_secret_access_key`, `aws_session_token`) and the IRSA web
  identity token file; and values registered from a config (a token in
  `teacher.engine_kwargs`, a password in an endpoint URL);
- forms, whatever their value and wherever it came from (an instance role's
  or IRSA's short-lived credentials never appear in any file or variable):
  `X-Amz-Security-Token` headers and query parameters, request signatures,
  `<SessionToken>`/`<SecretAccessKey>` in STS replies, `"Token"` /
  `"SecretAccessKey"` in instance-metadata JSON, `key = value` pairs whose key
  names a secret, bearer tokens, JWTs, AWS access key ids and URL userinfo.

`configure_logging` redacts every log record of the process as it is created
(a log-record factory), so a library's own handler — vLLM's logger does not
propagate to the root — prints redacted text too; it also adds a filter to
the root handlers for exception text. Level from `POTSTILL_LOG_LEVEL`
(default INFO; DEBUG makes a run verbose, botocore's signed requests included).
vLLM's engine processes and Ray's logger use the same handler and format
(`pipelines/observe/logs.py`).
"""

from __future__ import annotations

import configparser
import logging
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from potstill.pipelines.observe.logs import LEVEL_ENV  # noqa: F401 - where callers have looked for it
from potstill.pipelines.output.storage import scrub

_SECRET_NAME = re.compile(r"(API_?KEY|ACCESS_KEY|SECRET_KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?|AUTH)$", re.I)
_MIN_SECRET_LEN = 6  # shorter values ("1", "true") would blank out ordinary text

# Credential forms, redacted whatever the value.
_XML_SECRET = re.compile(r"(?i)<(SecretAccessKey|SessionToken|SecurityToken|Token|WebIdentityToken)>[^<]*</\1>")
_KEY_VALUE = re.compile(
    r"""(?ix)
    (["']?\b[\w.-]*?(?:secret[\w-]*|token|password|passwd|api[_-]?key|access[_-]?key(?:[_-]?id)?|credentials?)
     ["']?\s*[:=]\s*b?["']?)
    (?!\d+\b)([^"'\s,;&}<>)\]]{8,})""")
_BEARER = re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_SIGNATURE = re.compile(r"(?i)\b(Signature=)[0-9a-f]{16,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")

_registered: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Treat `values` as secrets from now on in this process (e.g. tokens found in a config)."""
    _registered.update(v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LEN)


def _file_stamp(path: str | None) -> tuple[str, float] | None:
    if not path:
        return None
    path = os.path.expanduser(path)
    try:
        return path, os.stat(path).st_mtime
    except OSError:
        return None


@lru_cache(maxsize=16)
def _credential_file_values(path: str, _mtime: float) -> frozenset[str]:
    """Secret-named values of an AWS shared credentials/config file (every profile)."""
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError):
        return frozenset()
    return frozenset(value.strip() for section in parser.sections() for key, value in parser.items(section)
                     if _SECRET_NAME.search(key) or key.lower() == "aws_access_key_id")


@lru_cache(maxsize=16)
def _token_file_value(path: str, _mtime: float) -> frozenset[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            token = f.read(1 << 16).strip()
    except OSError:
        return frozenset()
    return frozenset({token}) if token else frozenset()


def _file_secrets() -> set[str]:
    found: set[str] = set()
    for var, default in (("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), ("AWS_CONFIG_FILE", "~/.aws/config")):
        stamp = _file_stamp(os.environ.get(var, default))
        if stamp is not None:
            found |= _credential_file_values(*stamp)
    stamp = _file_stamp(os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"))
    if stamp is not None:
        found |= _token_file_value(*stamp)
    return found


def secret_values() -> list[str]:
    """Known secret values (environment, credential files, registered), longest first."""
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}
    values |= {v for v in _file_secrets() | _registered if len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with credentials replaced by `***`."""
    text = scrub(text)
    for value in secret_values():
        text = text.replace(value, "***")
    text = _XML_SECRET.sub(r"<\1>***</\1>", text)
    text = _KEY_VALUE.sub(r"\1***", text)
    text = _BEARER.sub(r"\1 ***", text)
    text = _SIGNATURE.sub(r"\1***", text)
    return _JWT.sub("***", text)


def config_secrets(data: Any) -> list[str]:
    """Values of a config (nested dicts/lists) that are secrets: under secret-named keys, or URL passwords."""
    found: list[str] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v, key)
        elif isinstance(node, str):
            if _SECRET_NAME.search(key):
                found.append(node)
            found.extend(m.group(1) for m in re.finditer(r"://[^/:@\s]*:([^/@\s]+)@", node))

    walk(data)
    return found


def redact_config(data: Any) -> Any:
    """A copy of a config with secret-named values as `***` and every string redacted (for run.json)."""
    if isinstance(data, dict):
        return {k: "***" if isinstance(v, str) and v and _SECRET_NAME.search(str(k)) else redact_config(v)
                for k, v in data.items()}
    if isinstance(data, list):
        return [redact_config(v) for v in data]
    if isinstance(data, str):
        return redact(data)
    return data


def _redact_record(record: logging.LogRecord) -> None:
    """Rewrite a record's message (args merged in), exception and stack text through `redact`, in place."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken format string: keep its parts, never the raw args
        message = f"{record.msg} {record.args!r}"
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (args merged in) and exception text through `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


class _RedactingRecordFactory:
    """Wraps the log-record factory: every record of every logger is redacted when it is made."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        _redact_record(record)
        return record


def _install_record_factory() -> None:
    factory = logging.getLogRecordFactory()
    seen = factory
    for _ in range(8):  # already installed, possibly under another library's wrapper (vLLM wraps the factory)
        if isinstance(seen, _RedactingRecordFactory):
            return
        seen = getattr(seen, "inner", None) or getattr(seen, "_factory", None)
        if seen is None:
            break
    logging.setLogRecordFactory(_RedactingRecordFactory(factory))


def install_redaction(config: Any = None) -> None:
    """Redact every log record this process makes from now on, without touching levels or handlers (the CLI and
    job drivers); `config` (a config's `model_dump()`): its secret values are redacted as well. Idempotent."""
    if config is not None:
        register_secrets(config_secrets(config))
    _install_record_factory()


def configure_logging(config: Any = None, fmt: str | None = None) -> None:
    """Root logging at POTSTILL_LOG_LEVEL, every record of the process redacted, vLLM's and Ray's records through
    the same handler (`logs.share_with_libraries`); idempotent.

    `config` (a config's `model_dump()`, optional): its secret values (tokens
    in `engine_kwargs`, URL passwords) are redacted from then on as well.
    """
    from potstill.pipelines.observe.logs import CHATTY, HANDLER, LOG_FORMAT, log_level, share_with_libraries

    level = log_level()
    install_redaction(config)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()  # sys.stderr as it is now: the CLI's log file, an actor's Ray log
        handler.set_name(HANDLER)
        handler.setFormatter(logging.Formatter(fmt or LOG_FORMAT))
        root.addHandler(handler)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    root.setLevel(level)
    # The S3 client stack's INFO lines are noise; at DEBUG (a verbose run) they are wanted.
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)
    share_with_libraries(level)
