"""A command session: engine and library output goes to the log file in the output folder, the terminal gets
potstill's own lines (and its warnings once each), `--json` keeps stdout to the summary, `--verbose` shows the
logs too, and no process the command started outlives it.

    .venv/bin/pytest tests/unit/cli/test_session.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

# What a long command's process does inside its session: every kind of output a vLLM/Ray command produces.
_COMMAND = textwrap.dedent("""
    import logging, os, subprocess, sys, threading
    from potstill.cli.common import print_json
    from potstill.cli import session as sessions
    from potstill.cli.session import command_session

    sessions.REAP_S = 1.0  # the forgotten child below is ended after a second instead of ten

    out, json_out, verbose = sys.argv[1], sys.argv[2] == "json", sys.argv[3] == "verbose"
    with command_session("test", out, json_out=json_out, verbose=verbose) as session:
        os.write(1, b"C-level stdout line\\n")
        os.write(2, b"C-level stderr line\\n")
        subprocess.run([sys.executable, "-c", "import sys; print('engine subprocess says hi'); "
                        "sys.stderr.write('engine subprocess warns\\\\n')"], check=True)
        logging.getLogger("vllm.v1.engine.core").info("engine core started with key %s", os.environ["SOME_API_KEY"])
        logging.getLogger("ray.data").warning("Progress bars disabled")
        for _ in range(2):
            logging.getLogger("potstill.pipelines.generate.controller").warning("replica-2 engine died: replacing it")
        def forward():  # Ray's driver thread printing a worker's line: text, then newline
            sys.stdout.write("(ControllerActor pid=7) 2026-12-01 07:30:51,123 potstill.pipelines.generate.controller "
                             "WARNING replica-3 failed to start: out of memory; replacing it")
            sys.stdout.write("\\n")
        thread = threading.Thread(target=forward)
        thread.start()
        thread.join()
        with session.phase("generating", "prompts", "generated") as phase:
            phase.update(done=4, total=4, fields=["traces 4"])
        print("a stray print")
        session.child = subprocess.Popen(["sleep", "300"])  # a process a teardown forgot
        if json_out:
            print_json({"summary": True, "child": session.child.pid})
        else:
            session.print(f"summary line · child {session.child.pid}")
""")


def _run(tmp_path: Path, mode: str, verbose: str = "quiet", columns: int = 200) -> tuple[subprocess.CompletedProcess, Path]:
    env = {**os.environ, "SOME_API_KEY": "canary-0123456789", "COLUMNS": str(columns)}
    env.pop("POTSTILL_LOG_LEVEL", None)
    out = tmp_path / mode / verbose
    proc = subprocess.run([sys.executable, "-c", _COMMAND, str(out), mode, verbose], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    logs = list((out / "logs").glob("test-*.log"))
    assert len(logs) == 1, logs
    return proc, logs[0]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("mode", ["text", "json"])
def test_the_terminal_shows_potstill_only_and_the_log_file_holds_the_rest(tmp_path, mode):
    proc, log = _run(tmp_path, mode)
    terminal = proc.stderr.splitlines()
    assert terminal[0] == f"log: {log}"
    assert terminal[1:4] == ["warning: replica-2 engine died: replacing it",
                             "warning: replica-3 failed to start: out of memory; replacing it",
                             "generated 4/4 prompts · traces 4 · 0:00"]
    if mode == "json":
        summary = json.loads(proc.stdout)
        assert len(terminal) == 4 and proc.stdout == json.dumps(summary) + "\n"
    else:
        assert proc.stdout == "" and len(terminal) == 5 and terminal[4].startswith("summary line · child ")
        summary = {"child": int(terminal[4].rsplit(" ", 1)[1])}
    text = log.read_text()
    for line in ("C-level stdout line", "C-level stderr line", "engine subprocess says hi", "engine subprocess warns",
                 "vllm.v1.engine.core INFO engine core started with key ***", "ray.data WARNING Progress bars disabled",
                 "(ControllerActor pid=7) ", "a stray print", "was still running 1 s after the command's teardown"):
        assert line in text, (line, text)
    assert "canary" not in text + proc.stderr
    assert _gone(summary["child"])


def test_verbose_shows_the_logs_on_the_terminal_too(tmp_path):
    proc, log = _run(tmp_path, "text", "verbose", columns=40)  # each log line whole, however narrow the terminal
    for line in ("C-level stdout line", "engine subprocess says hi", "engine core started with key ***",
                 "Progress bars disabled", "potstill.pipelines.generate.controller WARNING replica-2 engine died"):
        assert line in proc.stderr + proc.stdout, line
    assert "vllm.v1.engine.core INFO engine core started with key ***" in log.read_text()
    assert "canary" not in proc.stderr + proc.stdout + log.read_text()


def test_a_bad_log_level_is_said_on_the_terminal_and_nothing_is_redirected(tmp_path):
    env = {**os.environ, "POTSTILL_LOG_LEVEL": "LOUD"}
    code = ("import sys, typer\nfrom potstill.cli.session import command_session\n"
            "try:\n    with command_session('test', sys.argv[1]):\n        pass\n"
            "except typer.Exit as exc:\n    sys.exit(exc.exit_code)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2 and "POTSTILL_LOG_LEVEL='LOUD' is not a logging level" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()
