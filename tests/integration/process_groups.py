"""Kill a CLI started in its own session together with everything it started, and know when nothing is left.

    proc = subprocess.Popen([...potstill generate...], start_new_session=True)
    kill_process_group(proc)      # SIGKILL its group; returns once no live process of it remains

A `potstill` command's local Ray (GCS, raylet, workers, replica actors) and
vLLM's engine processes all stay in the command's process group, so once no
live process of that group is left nothing the command started can write
another commit: a test can read what a killed run left behind right away,
instead of waiting for a quiet period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil

POLL_S = 0.05
"""Between checks of a condition that turns true within milliseconds of the kill (processes reaped)."""


def live_members(pgid: int) -> list[psutil.Process]:
    """Processes of group `pgid` that can still run (zombies cannot write anything)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return members


def kill_process_group(proc: subprocess.Popen, limit_s: float = 120.0) -> None:
    """SIGKILL `proc`'s process group (it was started with start_new_session=True) and return once no live member
    remains; a process forked while the signal went out gets it on the next round."""
    pgid = proc.pid
    deadline = time.monotonic() + limit_s
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()  # reap our own child, so it is not left a zombie of this group
        if not live_members(pgid):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of group {pgid} still alive {limit_s:.0f} s after SIGKILL: "
                                 f"{[p.pid for p in live_members(pgid)]}")
        time.sleep(POLL_S)
