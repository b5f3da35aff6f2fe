"""One logging set-up for potstill and the libraries it drives: one format, one redacting handler, one level.

    configure_logging(cfg.model_dump())  # redact.configure_logging: every potstill process calls it, which calls
    share_with_libraries(level)          # this: vLLM's and Ray's records go through potstill's root handler
    message = potstill_warning(line)     # the CLI: is this log line one of potstill's own warnings?

Every record, potstill's and its libraries', goes through one root handler
(named `HANDLER`) that writes `LOG_FORMAT` lines to the process's stderr,
redacted. Where that ends up, the command's log file or the terminal, is the
caller's choice (`potstill/cli/session.py`); an actor's stderr is its Ray
log, which Ray forwards to the driver. The libraries are made to log through
that handler instead of their own:

- vLLM: `VLLM_LOGGING_CONFIG_PATH` names a `logging.config.dictConfig` file
  (`vllm_logging_config`) that vLLM applies in the process that builds an
  engine and in every process it spawns for it (engine core, workers), so
  engine logs carry the same format, level and redaction. A user's own
  VLLM_LOGGING_CONFIG_PATH, or VLLM_CONFIGURE_LOGGING=0, is left alone.
- Ray: the `ray` logger's own handler (added when `ray` is imported, and set
  up again by `ray.init`) is dropped so its records propagate to the root
  handler; `cluster/connect.py::ensure_ray` calls `adopt_library_loggers`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

LEVEL_ENV = "POTSTILL_LOG_LEVEL"
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
HANDLER = "potstill"
VLLM_CONFIG_ENV = "VLLM_LOGGING_CONFIG_PATH"
CHATTY = ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "httpx", "httpcore", "filelock")
_ADOPTED = ("ray", "vllm")
_VLLM_FILE = "potstill-vllm-logging-"
# A line LOG_FORMAT wrote for a potstill logger at WARNING or above, maybe behind Ray's "(Actor pid=..)" prefix.
_POTSTILL_WARNING = re.compile(r"\d,\d{3} (potstill(?:\.[\w.]+)?) (WARNING|ERROR|CRITICAL) (?P<message>.*)$")
_RAY_REPEATED = re.compile(r"\s*\[repeated \d+x across cluster\]\s*$")


def log_level() -> str:
    """POTSTILL_LOG_LEVEL, checked (default INFO)."""
    level = os.environ.get(LEVEL_ENV, "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ValueError(f"{LEVEL_ENV}={level!r} is not a logging level; use DEBUG, INFO, WARNING or ERROR")
    return level


def logging_dict(level: str) -> dict[str, Any]:
    """The dictConfig of a potstill process: one redacting stderr handler on the root logger at `level`."""
    quiet = "NOTSET" if level == "DEBUG" else "WARNING"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "potstill.pipelines.observe.redact.RedactingFilter"}},
        "formatters": {"potstill": {"format": LOG_FORMAT}},
        "handlers": {HANDLER: {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                 "formatter": "potstill", "filters": ["redact"]}},
        "root": {"level": level, "handlers": [HANDLER]},
        "loggers": {**{name: {"level": quiet} for name in CHATTY},
                    "vllm": {"level": level, "handlers": [], "propagate": True}},
    }


def vllm_logging_config(level: str) -> Path:
    """A dictConfig file vLLM applies in each of its processes (`logging_dict` at `level`); rewritten atomically."""
    path = Path(tempfile.gettempdir()) / f"{_VLLM_FILE}{os.getuid()}-{level.lower()}.json"
    text = json.dumps(logging_dict(level))
    if not path.exists() or path.read_text() != text:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


def adopt_library_loggers() -> None:
    """Ray's and vLLM's loggers lose their own handlers and propagate to the root handlers (once
    `configure_logging` set them up; a library user's process keeps theirs)."""
    if not logging.getLogger().handlers:
        return
    for name in _ADOPTED:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def share_with_libraries(level: str) -> None:
    """vLLM (in this process and the ones it spawns from now on) and Ray log through potstill's root handler."""
    adopt_library_loggers()
    current = os.environ.get(VLLM_CONFIG_ENV, "")
    if os.environ.get("VLLM_CONFIGURE_LOGGING", "1") != "0" and (not current or Path(current).name.startswith(_VLLM_FILE)):
        os.environ[VLLM_CONFIG_ENV] = str(vllm_logging_config(level))


def point_logging_at(stream: Any) -> None:
    """potstill's root handler writes to `stream` from now on (the CLI hands sys.stderr back at its end)."""
    for handler in logging.getLogger().handlers:
        if handler.get_name() == HANDLER and isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)


def potstill_warning(line: str) -> str | None:
    """The message of a potstill warning or error that `line` (a LOG_FORMAT line, maybe forwarded by Ray)
    carries, else None."""
    match = _POTSTILL_WARNING.search(line)
    if match is None:
        return None
    return _RAY_REPEATED.sub("", match.group("message")).strip() or None
