"""The README's two commands: CI runs exactly the test one; the main one really runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from potstill.cli.common import last_json_line

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_first_screen_has_exactly_two_commands_and_ci_runs_the_test_one():
    main, tests = readme_commands()
    assert main.startswith("bash scripts/install.sh && ") and tests.startswith("bash scripts/install.sh && ")
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci, ".ci/run must run exactly the README's test command"


@pytest.mark.slow
def test_readme_main_command_runs_the_generation_job(tmp_path):
    main, _ = readme_commands()
    job = shlex.split(main.split("&&", 1)[1])
    assert job[0] == ".venv/bin/potstill"
    cli = [sys.executable, "-m", "potstill.cli", *job[1:], "--out", str(tmp_path / "out"), "--json"]
    out = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, RAY_ADDRESS=""))
    assert out.returncode == 0, out.stderr[-3000:]
    summary = last_json_line(out.stdout)
    assert summary["totals"]["traces"] + 4 * summary["failed_prompts"] == 800
    assert summary["totals"]["verified"] > 0.9 * summary["totals"]["traces"]
    assert (tmp_path / "out" / "_SUCCESS").exists()
