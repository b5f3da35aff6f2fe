"""Keep credentials out of logs and records: `redact(text)` and scrubbed process logging.

    configure_logging()          # once per process (the controller and replica actors call it)
    reason = redact(str(exc))    # before an error text goes into a commit record or manifest

`redact` removes what `storage.scrub` knows (AWS keys and tokens, URL
userinfo, presigned-URL signatures) plus the value of every environment
variable whose name ends like a secret's (`*_API_KEY`, `*_TOKEN`, `*_SECRET`,
`*_PASSWORD`, `*_CREDENTIALS`, ...). `configure_logging` sets the root level from
`POTSTILL_LOG_LEVEL` (default INFO; DEBUG makes a run verbose, botocore's
signed-request lines included) and redacts every record on every root
handler, exception text included.
"""

from __future__ import annotations

import logging
import os
import re

from potstill.pipelines.output.storage import scrub

LEVEL_ENV = "POTSTILL_LOG_LEVEL"
_SECRET_NAME = re.compile(r"(API_?KEY|ACCESS_KEY|SECRET_KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?)$", re.I)
_CHATTY = ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3")
_MIN_SECRET_LEN = 6  # shorter values ("1", "true") would blank out ordinary text


def secret_values() -> list[str]:
    """Values of environment variables named like secrets, longest first."""
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with credentials replaced by `***`."""
    text = scrub(text)
    for value in secret_values():
        text = text.replace(value, "***")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (args merged in) and exception text through `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def configure_logging(fmt: str = "%(asctime)s %(name)s %(levelname)s %(message)s") -> None:
    """Root logging at POTSTILL_LOG_LEVEL with every root handler redacting; idempotent."""
    level = os.environ.get(LEVEL_ENV, "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ValueError(f"{LEVEL_ENV}={level!r} is not a logging level; use DEBUG, INFO, WARNING or ERROR")
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    root.setLevel(level)
    # The S3 client stack's INFO lines are noise; at DEBUG (a verbose run) they are wanted.
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)
