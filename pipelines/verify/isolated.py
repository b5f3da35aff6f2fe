"""Verdicts computed in a worker process with a time limit: an answer that sympy cannot finish is judged False.

    checker = IsolatedChecker(timeout_s=1.0)
    checker.check("math", answer, reference)                 # True / False; False when over the limit
    checker.check("callable", "pkg.mod:fn", completion, ref) # a user verifier, same bound

math-verify parses answers with sympy; an answer like `\\boxed{9^{9^{9^{9}}}}`
makes it compute a power with hundreds of millions of digits inside one C
call, which no signal or thread can interrupt and which holds the GIL of
the process that runs it. So verdicts run in a separate process (`worker.py`, a fresh
interpreter: never a fork of a replica with threads, and never a re-import
of the caller's main script as multiprocessing's spawn would do): the
caller's thread only waits on a socket, its event loop keeps running, and a verdict that has used `timeout_s`
of CPU time (or `WALL_FACTOR` times that in wall time, for a check that
waits instead of computing) is judged False while the worker is killed and
replaced. CPU time, not wall time, so a verdict never depends on how busy
the machine is: a starved worker is not charged for the time it waited. A
`verify.function` runs there too, under the same bound. The worker imports
math-verify and parses a first answer before it reports ready, so the limit
never pays for sympy's import or the LaTeX grammar's construction; each worker serves one verdict at a time, so a pool of `processes`
workers judges that many samples at once. `shared_checker(timeout_s)` is
the one pool of a process for that limit (every Judge of a replica uses it).
"""

from __future__ import annotations

import logging
import queue
import socket
import subprocess
import sys
import threading
import time
import weakref
from functools import lru_cache
from multiprocessing.connection import Connection
from typing import Any

import psutil

from potstill.pipelines.observe.redact import redact

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0
"""How long a worker may take to import math-verify and report ready (a loaded machine imports slowly)."""
WALL_FACTOR = 20.0
"""A verdict also ends after this many times its CPU limit in wall time (a check that sleeps or blocks)."""
POLL_S = 0.05
"""How often the waiting caller looks at the worker's CPU time."""


class VerdictTimeout(Exception):
    """A verdict did not come back within the limit (its worker was killed)."""


class CheckError(RuntimeError):
    """The check itself raised in the worker (e.g. a user verifier's exception); the message says what."""


class _Worker:
    """One verifier process (`python -m potstill.pipelines.verify.worker`) and its end of a socket pair."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "potstill.pipelines.verify.worker", str(theirs.fileno())],
                                            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        if not self.conn.poll(START_TIMEOUT_S):
            self.kill()
            raise CheckError(f"the verifier process did not start within {START_TIMEOUT_S:g} s")
        self.conn.recv()

    def cpu_s(self) -> float:
        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.Error:  # gone: the caller treats it as a dead worker
            raise EOFError("the verifier process is gone") from None
        return times.user + times.system

    def ask(self, kind: str, args: tuple, timeout_s: float) -> Any:
        """Send one check and wait for its answer; VerdictTimeout once it used `timeout_s` CPU seconds."""
        start, began = self.cpu_s(), time.monotonic()
        self.conn.send((kind, args))
        while not self.conn.poll(POLL_S):
            if self.cpu_s() - start > timeout_s or time.monotonic() - began > WALL_FACTOR * timeout_s:
                raise VerdictTimeout
        status, value = self.conn.recv()
        if status == "error":
            raise CheckError(value)
        return value

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill that did not land
            pass
        self.conn.close()


def _kill_all(workers: list[_Worker]) -> None:
    for worker in workers:
        try:
            worker.kill()
        except Exception:  # noqa: BLE001 - at interpreter exit, best effort
            pass


class IsolatedChecker:
    """A small pool of verifier processes, started on first use; thread-safe (see the module docstring)."""

    def __init__(self, timeout_s: float = 1.0, processes: int = 1):
        if timeout_s <= 0 or processes < 1:
            raise ValueError(f"IsolatedChecker(timeout_s={timeout_s}, processes={processes}): both must be positive")
        self.timeout_s = timeout_s
        self.processes = processes
        self.timeouts = 0  # verdicts judged False because they ran over the limit
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(processes):
            self._idle.put(None)  # a slot; its worker starts when first needed
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _kill_all, self._workers)

    def warm_up(self) -> None:
        """Start one worker now (a replica calls this while its engine loads)."""
        worker = self._idle.get()
        try:
            worker = self._live(worker)
        finally:
            self._idle.put(worker)

    def _live(self, worker: _Worker | None) -> _Worker:
        if worker is not None and worker.alive():
            return worker
        if worker is not None:
            self._forget(worker)
        worker = _Worker()
        with self._lock:
            self._workers.append(worker)
        return worker

    def _forget(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)

    def check(self, kind: str, *args: Any) -> Any:
        """The check's value; False when it ran over `timeout_s` or killed its worker; CheckError when it raised.

        kind `math`: (answer, reference); kind `callable`: ("pkg.mod:fn", completion, reference).
        """
        if kind == "callable":
            args = (*args, tuple(sys.path))
        worker = self._idle.get()
        try:
            worker = self._live(worker)
            try:
                return worker.ask(kind, args, self.timeout_s)
            except VerdictTimeout:
                self.timeouts += 1
                log.warning("verifier: a %s check ran over %g CPU s and was judged False (its worker was replaced): %s",
                            kind, self.timeout_s, redact(repr(args)[:200]))
                self._forget(worker)
                worker = None
                return False
            except (EOFError, OSError) as exc:  # the worker died (out of memory on a monstrous answer, say)
                self.timeouts += 1
                log.warning("verifier: the worker died during a %s check (%s) and it was judged False: %s", kind,
                            type(exc).__name__, redact(repr(args)[:200]))
                self._forget(worker)
                worker = None
                return False
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """Stop every worker (also done when the checker is garbage-collected or the process exits)."""
        self._finalizer()


@lru_cache(maxsize=None)
def shared_checker(timeout_s: float) -> IsolatedChecker:
    """This process's verifier pool for `timeout_s` (created on first use, started on first check)."""
    checker = IsolatedChecker(timeout_s)
    _shared.append(checker)
    return checker


_shared: list[IsolatedChecker] = []


def close_shared_checkers() -> None:
    """Stop the worker processes of every shared pool of this process now (the end of a CLI command, which then
    waits for its child processes); a later check starts a fresh pool."""
    shared_checker.cache_clear()
    while _shared:
        _shared.pop().close()
