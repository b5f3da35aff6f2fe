"""`--json` output: stdout carries only the summary, and the summary is found in merged logs.

    .venv/bin/pytest tests/unit/test_cli_json_output.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from potstill.cli.common import last_json_line

SUMMARY = {"run_id": "r1", "totals": {"traces": 8, "nested": {"a": [1, 2]}}, "out": "s3://b/run"}

# What a `--json` command's process does: reserve stdout, then others print while it works
# (a Ray-style log thread that writes a line's text and its newline separately, a child
# process writing to descriptor 1), then the summary.
_COMMAND = textwrap.dedent("""
    import os, subprocess, sys, threading
    from potstill.cli.common import print_json, reserve_stdout_for_json

    reserve_stdout_for_json()
    def forward_logs():
        for i in range(200):
            sys.stdout.write(f"(Replica pid=7) line {i} {{'k': {i}}}")
            sys.stdout.write("\\n")
    thread = threading.Thread(target=forward_logs)
    thread.start()
    subprocess.run([sys.executable, "-c", "print('engine subprocess says hi')"], check=True)
    print_json(SUMMARY)
    thread.join()
    print("a late forwarded line")
""")


def test_json_command_stdout_holds_only_the_summary_and_the_rest_goes_to_stderr():
    out = subprocess.run([sys.executable, "-c", f"SUMMARY = {SUMMARY!r}\n" + _COMMAND],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == json.dumps(SUMMARY) + "\n"
    assert "engine subprocess says hi" in out.stderr and "(Replica pid=7) line 199" in out.stderr
    assert "a late forwarded line" in out.stderr


def test_summary_found_after_later_lines_and_behind_a_half_written_line():
    summary = json.dumps(SUMMARY)
    merged = "\n".join([
        "2026-11-24 04:31:30 WARNING token auth",
        "(Replica pid=7) DEBUG {'partial': 1}" + summary,  # a forwarded line's text, then the summary, then its \n
        "",
        "(Replica pid=7) {\"not\": \"the summary\"} and more text",
        "DEBUG botocore: Releasing ... <RetryQuotaChecker object at 0x7f3f>>",
    ])
    assert last_json_line(merged) == SUMMARY
    assert last_json_line(merged.encode()) == SUMMARY


def test_the_last_summary_wins_and_a_missing_one_is_an_error():
    first, second = {"n": 1}, {"n": 2, "x": {"y": "}"}}
    assert last_json_line(f"{json.dumps(first)}\nnoise\n{json.dumps(second)}\ntrailing\n") == second
    with pytest.raises(ValueError, match="no JSON object"):
        last_json_line("(Replica pid=7) {'python': 'repr'}\n[1, 2]\n{broken\n")
