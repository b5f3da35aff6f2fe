"""Which cores a CPU training worker is bound to, and the binding itself on a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from potstill.pipelines.distill.cpu_binding import worker_cores


def test_each_local_worker_gets_its_own_cores_in_order():
    allowed = {0, 1, 2, 3, 5, 7}
    assert [worker_cores(r, 3, 2, allowed) for r in range(3)] == [{0, 1}, {2, 3}, {5, 7}]
    assert [worker_cores(r, 2, 1, {4, 9}) for r in range(2)] == [{4}, {9}]


def test_fractional_cpus_bind_one_core_and_too_few_cores_bind_none():
    assert worker_cores(0, 2, 0.5, {0, 1}) == {0}
    assert worker_cores(0, 3, 1, {0, 1}) is None
    assert worker_cores(1, 2, 2, {0, 1, 2}) is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores for 2 workers")
def test_bind_worker_pins_every_thread_of_the_process():
    # A fresh interpreter: binding the test process would slow every test after it.
    script = (
        "import json, os, threading, time\n"
        "from potstill.pipelines.distill.cpu_binding import bind_worker\n"
        "t = threading.Thread(target=time.sleep, args=(5,), daemon=True); t.start()\n"
        "cores = bind_worker(1, 2, 1)\n"
        "tids = [int(x) for x in os.listdir('/proc/self/task')]\n"
        "print(json.dumps({'cores': sorted(cores), 'threads': [sorted(os.sched_getaffinity(x)) for x in tids]}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                    timeout=60).stdout.strip().splitlines()[-1])
    second = sorted(os.sched_getaffinity(0))[1]
    assert out["cores"] == [second]
    assert len(out["threads"]) >= 2 and all(t == [second] for t in out["threads"])


HELD_SCRIPT = """
import json, multiprocessing as mp, os, sys, time
from potstill.pipelines.distill.cpu_binding import bind_worker

def vllm_worker(core, ready):
    with open("/proc/self/comm", "w") as f:
        f.write("VLLM::Worker_TP0")
    os.sched_setaffinity(0, {core})
    ready.set()
    time.sleep(60)

if __name__ == "__main__":
    held, world = int(sys.argv[1]), int(sys.argv[2])
    ready = mp.get_context("fork").Event()
    teacher = mp.get_context("fork").Process(target=vllm_worker, args=(held, ready), daemon=True)
    teacher.start()
    ready.wait(10)
    cores = bind_worker(0, world, 1)
    print(json.dumps({"cores": sorted(cores) if cores is not None else None, "self": sorted(os.sched_getaffinity(0))}))
    teacher.kill()
"""


def run_beside_a_vllm_worker(held: int, world: int) -> dict:
    out = subprocess.run([sys.executable, "-c", HELD_SCRIPT, str(held), str(world)], capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores: one for the teacher, one to train on")
def test_training_workers_keep_off_the_cores_a_cpu_teacher_computes_on():
    allowed = sorted(os.sched_getaffinity(0))
    beside = run_beside_a_vllm_worker(held=allowed[0], world=1)
    assert beside["cores"] == [allowed[1]] and beside["self"] == [allowed[1]]
    # Too few cores left for every local worker: unbound, sharing all cores, rather than doubled up on the teacher's.
    crowded = run_beside_a_vllm_worker(held=allowed[0], world=len(allowed))
    assert crowded["cores"] is None and crowded["self"] == allowed
