"""`potstill eval` and `potstill teacher demo` run in a command session: the engine's output goes to the log file,
the terminal shows the log's path, one line while scoring and the result; `--json` keeps stdout to the object.

The scoring itself is replaced by a function that writes what vLLM writes (a log record, raw bytes on descriptor
2 as its engine process does) and returns a result; the real engine path is `tests/unit/test_packaging.py`'s
`potstill teacher demo` and the distillation job's `eval.prompts`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

RESULT = {"accuracy": 0.75, "n": 4, "correct": 3, "finished": 4, "with_think_block": 4, "output_tokens_per_s": 1234.5,
          "elapsed_s": 2.0, "model": "potstill:arithmetic-teacher", "method": "math", "digits": 3,
          "sample": {"prompt": "What is 1 + [b]2[/b]?", "completion": "<think>1 + 2 = 3</think> 3"}}

_SCRIPT = textwrap.dedent("""
    import logging, os, sys
    import potstill.pipelines.jobs.evaluate as evaluate_module
    import potstill.pipelines.jobs.teacher_demo as teacher_demo

    def fake_evaluate(*args, on_completion=None, **kwargs):
        logging.getLogger("vllm.engine").warning("ENGINE LOG LINE from vLLM")
        os.write(2, b"RAW ENGINE PROCESS OUTPUT\\n")
        for done in range(1, RESULT["n"] + 1):
            on_completion(done)
        return RESULT

    evaluate_module.evaluate = fake_evaluate
    teacher_demo.evaluate = fake_evaluate
    sys.argv = ["potstill", *ARGS]
    from potstill.cli import main
    main()
""")


def _run(args: list[str], cache: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "POTSTILL_LOG_LEVEL"} | {"XDG_CACHE_HOME": cache,
                                                                                "COLUMNS": "100"}
    script = f"RESULT = {RESULT!r}\nARGS = {args!r}\n" + _SCRIPT
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("args, result_line", [
    (["eval", "potstill:arithmetic-teacher", "arithmetic:4"], "accuracy 0.750 (3/4, math verifier)"),
    (["teacher", "demo", "--n", "4"], "accuracy 0.750 (3/4) · one <think> block 4/4"),
])
def test_the_terminal_shows_the_log_path_one_scoring_line_and_the_result_and_the_engine_output_goes_to_the_log(
        tmp_path, args, result_line):
    out = _run(args, str(tmp_path))
    assert out.returncode == 0, out.stderr
    terminal = out.stdout + out.stderr
    log_path = re.search(r"log: (\S+\.log)", terminal).group(1)
    assert log_path.startswith(str(tmp_path / "potstill" / "logs"))
    assert result_line in terminal and "What is 1 + [b]2[/b]?" in terminal  # the sample's text, not markup
    assert "scored 4/4 prompts" in terminal
    assert "ENGINE LOG LINE" not in terminal and "RAW ENGINE PROCESS OUTPUT" not in terminal
    log = open(log_path).read()
    assert "ENGINE LOG LINE from vLLM" in log and "RAW ENGINE PROCESS OUTPUT" in log


def test_json_keeps_stdout_to_the_one_object(tmp_path):
    out = _run(["eval", "potstill:arithmetic-teacher", "arithmetic:4", "--json"], str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == RESULT
    assert "log: " in out.stderr and "ENGINE LOG LINE" not in out.stderr
