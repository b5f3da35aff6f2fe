"""One live controller per output root, across clusters: a lease in the run's storage.

    lease = RunLease(storage, run_id, holder="ray 10.0.0.5:6379, controller potstill-run-abc")
    lease.acquire()        # RunLiveElsewhere if another controller is alive on this run
    lease.beat()           # every few seconds while the run works (rate-limited here)
    lease.release()        # the run ended (the next controller need not wait for the lease to expire)

Two drivers on one cluster share the run's named controller actor, so they
never both generate. Two drivers on different clusters (two laptops, a
laptop and a KubeRay job) only share the output root; there the lease
decides. Leases are numbered objects `controller/lease-<n>.json`, each
created with a conditional create, so of two controllers taking the same
expired lease exactly one wins. The holder rewrites `controller/beat-<n>.json`
(a counter and its wall time) every `beat_s`; a lease is live while its beat
advances. A newcomer that finds a recent beat watches it for up to
`2 x beat_s` before deciding, so a dead controller's last beat keeps a run
locked for seconds, not until a timeout. (With clocks more than three beats
apart a live holder can look dead and be taken over; it sees the newer lease
at its next beat and stops.) Exactly-once output does not depend on the lease (commits
are conditional creates); it only keeps a second controller from redoing work.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from potstill.pipelines.output.storage import Storage

log = logging.getLogger("potstill.controller")

LEASE_DIR = "controller"


class RunLiveElsewhere(RuntimeError):
    """Another live controller holds the run's lease."""


@dataclass
class _Beat:
    count: int
    at: float
    released: bool


class RunLease:
    """The run's controller lease (see the module docstring)."""

    def __init__(self, storage: Storage, run_id: str, holder: str, *, beat_s: float = 5.0,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.storage = storage
        self.run_id = run_id
        self.holder = holder
        self.beat_s = beat_s
        self.clock, self.sleep = clock, sleep
        self.token = uuid.uuid4().hex[:12]
        self.number: int | None = None
        self._count = 0
        self._last_beat = 0.0

    # -- acquiring ----------------------------------------------------------------------------------
    def acquire(self) -> None:
        """Hold the run's lease, waiting briefly to tell a dead holder from a live one; raises RunLiveElsewhere."""
        while True:
            current = self._latest()
            if current is not None:
                number, record = current
                if self._alive(number):
                    raise RunLiveElsewhere(
                        f"run {self.run_id!r} is live elsewhere: {record.get('holder', 'another controller')} holds "
                        f"{self.storage.uri_of(_lease_path(number))} (host {record.get('host', '?')}, started "
                        f"{_ago(self.clock() - record.get('at', self.clock()))}) and its heartbeat advances. Follow it "
                        f"with `potstill status {self.run_id} --address <that cluster>`, or wait for it to finish; a "
                        f"controller that dies releases the run {2 * self.beat_s:g} s after its last heartbeat")
                candidate = number + 1
            else:
                candidate = 1
            record = {"run_id": self.run_id, "holder": self.holder, "token": self.token, "host": socket.gethostname(),
                      "at": self.clock()}
            if self.storage.put_if_absent(_lease_path(candidate), json.dumps(record, sort_keys=True).encode()):
                self.number = candidate
                self.beat(force=True)
                return
            # Another controller created that lease first: look again (it is probably alive now).

    def _latest(self) -> tuple[int, dict] | None:
        numbers = [_number_of(rel) for rel in self.storage.list(LEASE_DIR)]
        numbers = [n for n in numbers if n is not None]
        if not numbers:
            return None
        number = max(numbers)
        try:
            return number, json.loads(self.storage.read_bytes(_lease_path(number)))
        except (FileNotFoundError, ValueError):
            return number, {}

    def _read_beat(self, number: int) -> _Beat | None:
        try:
            data = json.loads(self.storage.read_bytes(_beat_path(number)))
            return _Beat(int(data["count"]), float(data["at"]), bool(data.get("released")))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def _alive(self, number: int) -> bool:
        """Whether lease `number`'s holder still beats: released or long silent -> no; else watch it advance."""
        first = self._read_beat(number)
        if first is not None and first.released:
            return False
        if first is not None and self.clock() - first.at > 3 * self.beat_s:
            return False  # silent for three beats by our clock: dead (a large clock skew costs one wait below)
        deadline = self.clock() + 2 * self.beat_s
        log.info("run %s: lease %d was renewed recently; watching its heartbeat for up to %g s", self.run_id, number,
                 2 * self.beat_s)
        while self.clock() < deadline:
            self.sleep(min(0.5, self.beat_s / 4))
            now = self._read_beat(number)
            if now is None:
                continue
            if now.released:
                return False
            if first is None or now.count != first.count:
                return True
        return False

    # -- holding ------------------------------------------------------------------------------------
    def beat(self, force: bool = False) -> None:
        """Renew the lease (at most once per `beat_s` unless forced); a superseded lease raises RunLiveElsewhere."""
        if self.number is None:
            return
        now = self.clock()
        if not force and now - self._last_beat < self.beat_s:
            return
        latest = self._latest()
        if latest is not None and latest[0] != self.number:
            raise RunLiveElsewhere(f"run {self.run_id!r}: lease {self.number} was taken over by "
                                   f"{latest[1].get('holder', 'another controller')} (this controller missed its "
                                   f"heartbeats); stopping so that two controllers do not run the same work")
        self._count += 1
        self._last_beat = now
        self.storage.put(_beat_path(self.number), json.dumps({"count": self._count, "at": now}).encode())

    def release(self) -> None:
        """Give the lease up (best effort): the next controller starts at once."""
        if self.number is None:
            return
        try:
            self.storage.put(_beat_path(self.number), json.dumps(
                {"count": self._count + 1, "at": self.clock(), "released": True}).encode())
        except Exception as exc:  # noqa: BLE001 - the lease then expires by itself
            log.warning("run %s: could not release lease %d (%s); it expires on its own", self.run_id, self.number, exc)
        self.number = None


def _lease_path(number: int) -> str:
    return f"{LEASE_DIR}/lease-{number:06d}.json"


def _beat_path(number: int) -> str:
    return f"{LEASE_DIR}/beat-{number:06d}.json"


def _number_of(rel: str) -> int | None:
    name = rel.rsplit("/", 1)[-1]
    if name.startswith("lease-") and name.endswith(".json"):
        try:
            return int(name[len("lease-"):-len(".json")])
        except ValueError:
            return None
    return None


def _ago(seconds: float) -> str:
    return f"{max(seconds, 0):.0f} s ago"
