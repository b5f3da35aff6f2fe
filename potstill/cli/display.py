"""What a command shows on the terminal: one live line per phase, fitted to the terminal's width.

    with session.phase("generating", unit="prompts", done_label="generated") as phase:
        phase.update(done=120, total=2000, fields=["traces 120", "verified 98%", "1,234 tok/s"], status="generating")

A phase line reads `label  bar  done/total unit · field · field · 0:42 · ETA 1:10`
and never wraps or ends in "…": when the terminal is narrow the bar shrinks
first, then the trailing fields go (the last first), then the ETA, then the
bar; the count is the last thing kept. On a terminal the line redraws in
place; elsewhere (a pipe, CI) only each phase's final line is printed. When a
phase ends without error its line says `done_label` instead of the last
status.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, ConsoleOptions, ConsoleDimensions, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.segment import Segment
from rich.text import Text

SEP = " · "
BAR_MIN, BAR_MAX = 10, 30


class TerminalConsole(Console):
    """A console that measures the terminal it writes to (its own descriptor), not descriptors 0-2, which a
    command may have pointed at its log file."""

    @property
    def size(self) -> ConsoleDimensions:
        if self._width is None and "COLUMNS" not in os.environ:
            try:
                columns, lines = os.get_terminal_size(self.file.fileno())
            except (AttributeError, ValueError, OSError):
                pass
            else:
                if columns > 0:
                    return ConsoleDimensions(columns, self._height or lines or 25)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


def clock(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class LineParts:
    """What one phase line has to say, before it is fitted to a width."""

    label: str
    count: str
    fields: list[str] = field(default_factory=list)
    elapsed: str = ""
    eta: str = ""


def fit(parts: LineParts, width: int, with_bar: bool = True) -> tuple[str, int, str]:
    """(text before the bar, bar width or 0, text after it), `width` characters at most with the spaces
    between them. Without `with_bar` (a log, a pipe) the fields get the bar's room."""
    fields, eta = list(parts.fields), parts.eta
    reserve = BAR_MIN + 1 if with_bar else 0

    def tail() -> str:
        timing = " ".join(t for t in (parts.elapsed, eta) if t)
        return SEP.join([parts.count, *fields] + ([timing] if timing else []))

    def text() -> int:  # label, a space, the tail
        return len(parts.label) + 1 + len(tail())

    while fields and text() + reserve > width:
        fields.pop()
    if eta and text() + reserve > width:
        eta = ""
    room = width - text() - 1
    bar = min(BAR_MAX, room) if with_bar and room >= BAR_MIN else 0
    label, rest = parts.label, tail()
    if len(label) + 1 + len(rest) > width:
        room = width - len(rest) - 1
        label = label[: room - 1] + "…" if room > 1 else ""
    if not label:  # not even the label fits beside the count: the count alone, cut to the width
        return "", 0, rest[:width].rstrip()
    return label, bar, rest


class PhaseLine:
    """The renderable of one phase: label, bar and tail, fitted to the width rich offers."""

    def __init__(self, phase: "Phase"):
        self.phase = phase

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        p = self.phase
        label, bar, rest = fit(p.parts(), options.max_width, with_bar=console.is_terminal)
        if label:
            yield Text(label, style="bold " + p.style, end=" ")
        if bar:
            pulse = p.total is None and not p.finished
            yield from console.render(ProgressBar(total=p.total or 1, completed=p.done if p.total else 0, width=bar,
                                                  pulse=pulse), options.update(width=bar))
            yield Segment(" ")
        yield Text(rest, end="")
        yield Segment.line()


class Phase:
    """One live line for one phase of a command (a context manager; see the module docstring)."""

    def __init__(self, console: Console, label: str, unit: str, done_label: str | None = None,
                 total: int | None = None):
        self.console = console
        self.status = label
        self.unit = unit
        self.done_label = done_label or label
        self.total = total
        self.done = 0
        self.fields: list[str] = []
        self.style = "cyan"
        self.finished = False
        self.started = time.monotonic()
        self.ended: float | None = None
        self._first_progress: tuple[float, int] | None = None
        self._live = Live(PhaseLine(self), console=console, refresh_per_second=4, transient=False,
                          redirect_stdout=False, redirect_stderr=False)

    def __enter__(self) -> "Phase":
        self._live.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(ok=exc_type is None)

    def close(self, ok: bool = True) -> None:
        if self.finished:
            return
        self.finished = True
        self.ended = time.monotonic()
        if ok:
            self.status, self.style = self.done_label, "green"
        else:
            self.style = "red"
        self._live.stop()
        if not self.console.is_terminal:  # rich ends the final line only on a terminal
            self.console.line()

    def update(self, *, done: int | None = None, total: int | None = None, fields: list[str] | None = None,
               status: str | None = None) -> None:
        """New figures for the line (any left out keep their value; `total=0`: not known)."""
        if total is not None:
            self.total = total or None
        if done is not None:
            if done > 0 and self._first_progress is None:
                self._first_progress = (time.monotonic(), self.done)
            self.done = done
        if fields is not None:
            self.fields = fields
        if status:
            self.status = status

    def eta_s(self) -> float | None:
        """Seconds left at the rate since the first progress, or None while unknown."""
        if self.total is None or self._first_progress is None or self.finished:
            return None
        since, base = self._first_progress
        rate = (self.done - base) / max(time.monotonic() - since, 1e-6)
        return (self.total - self.done) / rate if rate > 0 and self.done < self.total else None

    def parts(self) -> LineParts:
        count = f"{self.done:,}/{self.total:,} {self.unit}" if self.total else f"{self.done:,} {self.unit}"
        eta = self.eta_s()
        return LineParts(self.status, count, list(self.fields), clock((self.ended or time.monotonic()) - self.started),
                         f"ETA {clock(eta)}" if eta is not None else "")
