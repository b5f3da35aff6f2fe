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
