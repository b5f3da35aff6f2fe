"""Keeping a CPU teacher's frontend off its model worker's cores, on real processes (Linux /proc).

Each case runs in a fresh interpreter: pinning the test process itself would
slow every test after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU affinity through /proc is Linux-only")

SCRIPT = textwrap.dedent("""
    import json, multiprocessing as mp, os, sys, time
    from potstill.pipelines.host.cpu_affinity import keep_frontend_off_worker_cores

    def child(name, cores, ready):
        with open("/proc/self/comm", "w") as f:
            f.write(name)
        if cores:
            os.sched_setaffinity(0, cores)
        ready.set()
        time.sleep(60)

    if __name__ == "__main__":
        worker = json.loads(sys.argv[1])  # the worker's cores, "all" (unbound) or null (no worker)
        ctx = mp.get_context("fork")
        kids = {}
        children = [("VLLM::EngineCor", None)] + ([("VLLM::Worker_TP0", None if worker == "all" else worker)] if worker else [])
        for name, cores in children:
            ready = ctx.Event()
            kids[name] = ctx.Process(target=child, args=(name, set(cores) if cores else None, ready), daemon=True)
            kids[name].start()
            ready.wait(10)
        moved = keep_frontend_off_worker_cores(os.getpid())
        print(json.dumps({
            "moved": moved,
            "self": sorted(os.sched_getaffinity(0)),
            "engine": sorted(os.sched_getaffinity(kids["VLLM::EngineCor"].pid)),
            "worker": sorted(os.sched_getaffinity(kids["VLLM::Worker_TP0"].pid)) if worker else None,
        }))
        for p in kids.values():
            p.kill()
""")


def run(worker_cores: list[int] | str | None) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(worker_cores)], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to leave one to the worker")
def test_the_frontend_moves_to_the_cores_the_worker_leaves_free_and_the_engine_core_stays_free():
    allowed = sorted(os.sched_getaffinity(0))
    result = run([allowed[0]])
    free = allowed[1:]
    assert result["moved"] == {"worker_cores": [allowed[0]], "frontend_cores": free}
    assert result["self"] == free and result["engine"] == allowed
    assert result["worker"] == [allowed[0]]


def test_nothing_moves_when_the_worker_may_use_every_core():
    allowed = sorted(os.sched_getaffinity(0))
    result = run("all")
    assert result["moved"] == {}
    assert result["self"] == allowed and result["engine"] == allowed and result["worker"] == allowed


def test_nothing_moves_without_a_vllm_worker():
    allowed = sorted(os.sched_getaffinity(0))
    result = run(None)
    assert result["moved"] == {}
    assert result["self"] == allowed and result["engine"] == allowed
