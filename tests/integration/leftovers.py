"""Engine processes a killed replica left behind: vLLM processes started during this test session, in its
terminal session, that are no longer under this process.

    wait_for(lambda: not orphaned_engine_processes(), ...)

A replica actor's vLLM engine runs in a child process (`VLLM::EngineCore`, and `VLLM::Worker` under a
multiprocessing executor). Should the actor die without shutting its engine down (SIGKILL, `os._exit`, the OOM
killer) and nothing reap the child, it is re-parented out of this process's tree and keeps its memory (on a GPU
node, the device memory its replacement needs). vLLM retitles those processes with setproctitle, which
overwrites their environment block, so an inherited environment mark cannot recognise them; the session id
(kept unless a process calls setsid) and the start time can.
"""

from __future__ import annotations

import os

import psutil

ENGINE_PROCESS_PREFIX = "VLLM::"  # vLLM's names for its engine-core and worker processes


def orphaned_engine_processes() -> list[str]:
    """Live vLLM engine processes of this terminal session, started after this process, outside its tree."""
    me = psutil.Process()
    ours = {p.pid for p in me.children(recursive=True)}
    session, since = os.getsid(0), me.create_time()
    found = []
    for proc in psutil.process_iter(["pid", "name", "create_time"]):
        try:
            if (not (proc.info["name"] or "").startswith(ENGINE_PROCESS_PREFIX) or proc.pid in ours
                    or proc.info["create_time"] < since or os.getsid(proc.pid) != session
                    or proc.status() == psutil.STATUS_ZOMBIE):
                continue
            found.append(f"{proc.info['name']} (pid {proc.pid})")
        except (psutil.Error, OSError):
            continue
    return found
