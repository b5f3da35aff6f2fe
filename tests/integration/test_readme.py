"""The README's two commands: CI runs exactly the test one; the main one really runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # leftovers: shared helper (importlib mode)

from leftovers import orphaned_engine_processes  # noqa: E402

from potstill.cli.common import last_json_line  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_first_screen_has_exactly_two_commands_and_ci_runs_the_test_one():
    main, tests = readme_commands()
    assert main.startswith("bash scripts/install.sh && ") and tests.startswith("bash scripts/install.sh && ")
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci, ".ci/run must run exactly the README's test command"


LEFTOVER_GRACE_S = 15.0
"""How long after the demo returns its processes may take to exit on their own."""

# A log line of vLLM, Ray or Python's logging: a level word, Ray's "(Actor pid=..)" prefix, a "file.py:12" source.
_LIBRARY_LINE = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b|\(\w*\s?pid=\d+|\braylet\b|\w\.py:\d+")


def _processes_marked(mark: str) -> list[str]:
    """Processes still running whose environment carries `mark` (zombies, already dead, are not counted)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if proc.environ().get("POTSTILL_TEST_PROCESS_MARK") == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.info['name']} (pid {proc.pid}): {' '.join(proc.cmdline())[:120]}")
        except (psutil.Error, OSError):
            continue
    return found


def _user_env() -> dict[str, str]:
    """The environment a new user runs the command in: no Ray address, none of the test suite's vLLM settings
    (conftest.py sizes vLLM's CPU KV cache through VLLM_CPU_KVCACHE_SPACE; the demo must not need it)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")} | {"RAY_ADDRESS": ""}


@pytest.mark.slow
def test_readme_main_command_runs_the_whole_loop(tmp_path):
    """`potstill demo`: shipped teacher -> traces -> a smaller student (Ray Train, 2 CPU workers) -> accuracies."""
    main, _ = readme_commands()
    job = shlex.split(main.split("&&", 1)[1])
    assert job == [".venv/bin/potstill", "demo"]
    cli = [sys.executable, "-m", "potstill.cli", *job[1:], "--out", str(tmp_path / "out"), "--json"]
    mark = f"demo-{uuid.uuid4().hex}"  # every process the command starts inherits it (Ray's and vLLM's included)
    started = time.time()
    out = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, timeout=1200,
                         env=_user_env() | {"POTSTILL_TEST_PROCESS_MARK": mark})
    assert out.returncode == 0, out.stderr[-3000:]
    # Python's shared-memory resource tracker outlives its parent by design: it reads EOF once the demo has exited,
    # unlinks what is left and exits. A moment's grace for it; anything that stays is a process left behind. vLLM's
    # engine processes overwrite the environment that carries the mark (setproctitle), so they are looked for apart.
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while (left := _processes_marked(mark) + orphaned_engine_processes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"the demo left processes behind: {left}"
    # The terminal: potstill's own lines only (stage lines, one line per phase, the log file's path), no vLLM or
    # Ray log line, no traceback, one screen.
    terminal = out.stderr.splitlines()
    print("\n".join(terminal))
    noise = [line for line in terminal if _LIBRARY_LINE.search(line)]
    assert not noise and "Traceback" not in out.stderr, noise
    assert 0 < len(terminal) <= 20, terminal
    # The log file in the output folder holds what the terminal did not show: the engines' logs among it.
    logs = list((tmp_path / "out" / "logs").glob("demo-*.log"))
    assert len(logs) == 1 and f"log: {logs[0]}" in terminal[0], (logs, terminal[:1])
    assert re.search(r"vllm\S* (INFO|WARNING) ", logs[0].read_text()), "no vLLM log line in the demo's log file"
    summary = last_json_line(out.stdout)
    assert json.loads(out.stdout) == summary  # --json: stdout is the summary alone (logs go to stderr)
    print(f"demo took {time.time() - started:.0f} s: {summary}")
    assert summary["student_params"] < summary["teacher_params"] == 541_312
    assert summary["teacher_acc"] >= 0.95 and summary["student_acc"] >= 0.9 * summary["teacher_acc"]
    assert summary["traces"] == 2000 and summary["out"] == str(tmp_path / "out")
    # KD on the teacher's stored top-4, rows packed nearly full (the distillation job's own figures).
    assert summary["kd_topk"] == 4 and summary["packing_efficiency"] >= 0.95 and summary["train_steps"] > 0
    assert (tmp_path / "out" / "traces" / "_SUCCESS").exists()
    assert "1/3 generating" in out.stderr and "2/3 distilling" in out.stderr and "3/3 scoring" in out.stderr
