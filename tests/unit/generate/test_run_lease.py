"""One live controller per output root: the storage lease (local folder; the S3 path is the same calls)."""

from __future__ import annotations

import threading

import pytest

from potstill.pipelines.generate.run_lease import RunLease, RunLiveElsewhere
from potstill.pipelines.output.storage import Storage


class Clock:
    def __init__(self):
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def test_a_live_holder_refuses_a_second_controller_with_where_it_runs(tmp_path):
    store, clock = Storage(str(tmp_path)), Clock()
    first = RunLease(store, "r1", "controller potstill-r1 on ray 10.0.0.5:6379", clock=clock)
    first.acquire()

    def sleep(s: float) -> None:  # while the second one watches, the first keeps beating
        clock.t += s
        first.beat()

    second = RunLease(store, "r1", "controller potstill-r1 on ray 10.0.0.9:6379", clock=clock, sleep=sleep)
    with pytest.raises(RunLiveElsewhere, match=r"run 'r1' is live elsewhere: controller potstill-r1 on ray "
                                                r"10\.0\.0\.5:6379 .*potstill status r1 --address"):
        second.acquire()
    assert first.number == 1 and second.number is None


def test_a_released_lease_is_taken_at_once(tmp_path):
    store, clock = Storage(str(tmp_path)), Clock()
    first = RunLease(store, "r1", "a", clock=clock)
    first.acquire()
    first.release()
    slept = []
    second = RunLease(store, "r1", "b", clock=clock, sleep=slept.append)
    second.acquire()
    assert second.number == 2 and slept == []


def test_a_dead_holders_lease_is_taken_over_and_the_old_holder_stops_at_its_next_beat(tmp_path):
    store, clock = Storage(str(tmp_path)), Clock()
    first = RunLease(store, "r1", "a", clock=clock)
    first.acquire()

    def sleep(s: float) -> None:  # the first holder is frozen: no beat while the second one watches
        clock.t += s

    clock.t += 6  # its last beat is recent: the newcomer watches it for two beats before taking over
    second = RunLease(store, "r1", "b", clock=clock, sleep=sleep)
    second.acquire()
    assert second.number == 2 and clock.t >= 1_000 + 6 + 2 * 5
    clock.t += 10
    with pytest.raises(RunLiveElsewhere, match="taken over"):
        first.beat()


def test_a_long_silent_lease_is_taken_without_waiting(tmp_path):
    store, clock = Storage(str(tmp_path)), Clock()
    RunLease(store, "r1", "a", clock=clock).acquire()
    clock.t += 3600
    slept = []
    second = RunLease(store, "r1", "b", clock=clock, sleep=slept.append)
    second.acquire()
    assert second.number == 2 and slept == []


def test_two_controllers_starting_at_once_one_holds_the_run(tmp_path):
    store = Storage(str(tmp_path))
    outcomes: dict[str, object] = {}
    stop = threading.Event()
    barrier = threading.Barrier(2)

    def controller(name: str) -> None:
        lease = RunLease(store, "r1", name, beat_s=0.2)
        barrier.wait()
        try:
            lease.acquire()
        except RunLiveElsewhere as exc:
            outcomes[name] = exc
            return
        outcomes[name] = lease
        while not stop.wait(0.05):  # the holder works and beats
            lease.beat()

    threads = [threading.Thread(target=controller, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    try:
        threads_done = [t for t in threads if (t.join(5) or not t.is_alive())]
        assert len(threads_done) == 1, outcomes  # the refused one returned; the holder still runs
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    kinds = sorted(type(v).__name__ for v in outcomes.values())
    assert kinds == ["RunLease", "RunLiveElsewhere"]
