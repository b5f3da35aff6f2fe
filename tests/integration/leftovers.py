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


def _test_run_root() -> psutil.Process:
    """The pytest process whose tree holds every process of this test run: under xdist the controller that started
    this worker (the other worker's engines are its children too, not orphans), else this process."""
    return psutil.Process(os.getppid()) if os.environ.get("PYTEST_XDIST_WORKER") else psutil.Process()


def orphaned_engine_processes() -> list[str]:
    """Live vLLM engine processes of this terminal session, started after this test run, outside its tree."""
    root = _test_run_root()
    ours = {p.pid for p in root.children(recursive=True)}
    session, since = os.getsid(0), root.create_time()
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
