"""A command's stdout/stderr as whole, redacted lines: into the log file and on to the terminal's chooser.

    .venv/bin/pytest tests/unit/observe/test_log_router.py -q
"""

from __future__ import annotations

import io
import threading

from potstill.pipelines.observe.log_router import LogRouter


def test_pieces_written_by_threads_become_whole_plain_redacted_lines(monkeypatch):
    monkeypatch.setenv("POTSTILL_TEACHER_API_KEY", "canary-0123456789")
    file, seen = io.StringIO(), []
    router = LogRouter(file, on_line=seen.append)

    def forward(name: str) -> None:  # Ray's driver thread: a line's text, then its newline, in two writes
        for i in range(300):
            router.write(f"\x1b[36m({name} pid=7)\x1b[0m line {i} canary-0123456789")
            router.write("\n")

    threads = [threading.Thread(target=forward, args=(n,)) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = file.getvalue().splitlines()
    assert len(lines) == 600 and seen == lines
    assert all(line.endswith(" ***") and "canary" not in line for line in lines)
    assert all(line.startswith(("(A pid=7) line ", "(B pid=7) line ")) for line in lines)


def test_carriage_returns_and_an_unfinished_last_line():
    file, seen = io.StringIO(), []
    router = LogRouter(file, on_line=seen.append)
    router.write("Processed prompts:  10%\rProcessed prompts: 100%\r\n\n  \nno newline yet")
    assert seen == ["Processed prompts:  10%", "Processed prompts: 100%"]
    router.finish()
    assert file.getvalue().splitlines() == seen == ["Processed prompts:  10%", "Processed prompts: 100%", "no newline yet"]
