"""A command's stdout and stderr as whole lines: each into the command's log file, redacted, and handed to
whoever decides what the terminal shows.

    router = LogRouter(log_file, on_line=show)      # potstill/cli/session.py
    sys.stdout = sys.stderr = router

What arrives here: the process's own log records (`logs.configure_logging`
writes them to sys.stderr), the output of every Ray worker, which Ray's
driver thread prints to sys.stdout/sys.stderr one line at a time (text and
newline in two writes, from another thread), tqdm bars, stray prints. Pieces
are joined into lines under a lock, so a line from one thread is never split
by another's. `on_line` gets each finished line outside the lock (it may
print to a terminal, but must not write back here).
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from typing import TextIO

from potstill.pipelines.observe.redact import redact

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # Ray colours its "(Actor pid=..)" prefixes; a file wants none


class LogRouter(io.TextIOBase):
    """A text stream that splits what is written into lines and redacts them: the file gets each, `on_line` too."""

    def __init__(self, file: TextIO, on_line: Callable[[str], None] | None = None, fileno: int | None = None):
        self.file = file
        self.on_line = on_line
        self._fileno = fileno
        self._pending: dict[int, str] = {}  # per thread: the start of a line its next write continues
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        """Where raw writes should go (a child process given this stream as its stdout, faulthandler)."""
        if self._fileno is None:
            raise io.UnsupportedOperation("fileno")
        return self._fileno

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        with self._lock:
            # tqdm redraws with "\r": in a file each state would pile up on one endless line.
            lines = (self._pending.pop(thread, "") + text.replace("\r\n", "\n").replace("\r", "\n")).split("\n")
            if lines[-1]:
                self._pending[thread] = lines[-1]
            lines.pop()
            lines = [redact(_ANSI.sub("", line)) for line in lines if line.strip()]
            self._store(lines)
        self._hand_on(lines)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if not self.file.closed:
                self.file.flush()

    def finish(self) -> None:
        """Emit the lines no newline finished yet (at the end of the command)."""
        with self._lock:
            lines = [redact(_ANSI.sub("", text)) for text in self._pending.values() if text.strip()]
            self._pending.clear()
            self._store(lines)
        self._hand_on(lines)

    def close(self) -> None:
        """Emit what is left, then write nowhere: later writes (a thread that kept a reference) are dropped."""
        self.finish()
        with self._lock:
            self.on_line = None
            self.file.close()

    def _store(self, lines: list[str]) -> None:
        if lines and not self.file.closed:
            self.file.write("".join(line + "\n" for line in lines))
            self.file.flush()

    def _hand_on(self, lines: list[str]) -> None:
        on_line = self.on_line
        if on_line is None:
            return
        for line in lines:
            on_line(line)
