"""The verifier process: answers verdict requests from its parent's `IsolatedChecker` over a socket.

    python -m potstill.pipelines.verify.worker FD      # started by isolated.IsolatedChecker, never by hand

It imports math-verify and parses a first answer before it reports ready
(so no verdict's time limit pays for sympy's import or the LaTeX grammar's
construction), then answers `(kind, args)` requests until its parent closes
the socket: `math` -> `math_equal(answer, reference)`; `callable` -> the
user's `verify.function(completion, reference)`, imported with the caller's
sys.path. An exception a check raises is sent back as text; the process
exits when its parent is gone.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection
from typing import Any


def _die_with_parent() -> None:
    """Exit once the parent is gone, also in the middle of a long check (a thread watching the parent pid)."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(conn: Connection) -> None:
    from potstill.pipelines.verify.math import _math_verify, math_equal
    from potstill.pipelines.verify.user_callable import load_callable

    _math_verify()
    math_equal("\\boxed{\\frac{1}{2}}", "0.5")  # the first parse builds the LaTeX grammar: not on a verdict's clock
    functions: dict[str, Any] = {}
    conn.send(("ready", None))
    while True:
        try:
            kind, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if kind == "math":
                value: Any = bool(math_equal(*args))
            elif kind == "callable":
                path, completion, reference, caller_path = args
                if path not in functions:
                    sys.path[:] = list(caller_path)  # import the function as the caller would
                    functions[path] = load_callable(path)
                verdict = functions[path](completion, reference)
                value = None if verdict is None else bool(verdict)
            else:
                raise ValueError(f"unknown check {kind!r}")
            conn.send(("ok", value))
        except Exception as exc:  # noqa: BLE001 - reported to the caller; the worker lives on
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    _die_with_parent()
    serve(Connection(int(sys.argv[1])))
