"""One logging set-up for potstill and the libraries it drives: the level, the vLLM dictConfig file, Ray's and
vLLM's loggers adopted, and which log lines are potstill's own warnings.

    .venv/bin/pytest tests/unit/observe/test_logs.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from potstill.pipelines.observe.logs import logging_dict, potstill_warning


def test_potstill_warnings_are_recognised_in_forwarded_lines_and_nothing_else_is():
    forwarded = ("(ControllerActor pid=27666) 2026-12-01 07:30:51,123 potstill.pipelines.generate.controller "
                 "WARNING replica-2 engine died: replacing it [repeated 2x across cluster]")
    assert potstill_warning(forwarded) == "replica-2 engine died: replacing it"
    assert potstill_warning("2026-12-01 07:30:51,123 potstill ERROR the run failed") == "the run failed"
    for line in (
        "2026-12-01 07:30:51,123 potstill.pipelines.engines.vllm_engine INFO vLLM's model worker computes on [0]",
        "(TeacherReplica pid=1) 2026-12-01 07:30:51,123 vllm.v1.engine.core WARNING Triton is not installed",
        "2026-12-01 07:28:13,453 WARNING authentication_token_setup.py:85 -- Token authentication is enabled",
        "(raylet) WARNING: 14 PYTHON worker processes have been started on node",
        "a potstill WARNING said in passing",
    ):
        assert potstill_warning(line) is None, line


# A fresh process: potstill's set-up, then what vLLM does in each of its processes (dictConfig of the file that
# VLLM_LOGGING_CONFIG_PATH names), then records from vLLM, Ray and potstill loggers with a secret in them.
_PROCESS = textwrap.dedent("""
    import json, logging, logging.config, os, sys
    logging.getLogger("ray").addHandler(logging.StreamHandler(sys.stdout))   # what `import ray` does
    from potstill.pipelines.observe.redact import configure_logging
    configure_logging()
    path = os.environ["VLLM_LOGGING_CONFIG_PATH"]
    logging.config.dictConfig(json.load(open(path)))                       # vLLM, in an engine process
    for name in ("vllm.v1.engine.core", "ray.data", "potstill.pipelines.generate.controller"):
        logging.getLogger(name).info("key %s from %s", os.environ["POTSTILL_TEACHER_API_KEY"], name)
    logging.getLogger("botocore.endpoint").info("a request line")
    logging.getLogger("botocore.endpoint").warning("a retry")
    print(path)
""")


def test_potstill_vllm_and_ray_records_share_one_redacting_handler_in_every_process(tmp_path):
    env = {**os.environ, "POTSTILL_TEACHER_API_KEY": "canary-0123456789", "TMPDIR": str(tmp_path)}
    env.pop("VLLM_LOGGING_CONFIG_PATH", None)
    env.pop("POTSTILL_LOG_LEVEL", None)
    out = subprocess.run([sys.executable, "-c", _PROCESS], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    path = out.stdout.strip()
    assert path.startswith(str(tmp_path)) and json.loads(open(path).read()) == logging_dict("INFO")
    lines = out.stderr.splitlines()
    for name in ("vllm.v1.engine.core", "ray.data", "potstill.pipelines.generate.controller"):
        assert f" {name} INFO key *** from {name}" in out.stderr, out.stderr
    assert "canary" not in out.stderr and len(lines) == 4  # one line each, botocore's INFO left out
    assert lines[-1].endswith("botocore.endpoint WARNING a retry")


def test_a_users_own_vllm_logging_config_is_left_alone(tmp_path):
    code = "from potstill.pipelines.observe.redact import configure_logging; import os; configure_logging(); " \
           "print(os.environ.get('VLLM_LOGGING_CONFIG_PATH'))"
    mine = tmp_path / "mine.json"
    for extra, expected in (({"VLLM_LOGGING_CONFIG_PATH": str(mine)}, str(mine)), ({"VLLM_CONFIGURE_LOGGING": "0"}, "None")):
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_LOGGING")} | extra
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert out.stdout.strip() == expected, out.stderr
