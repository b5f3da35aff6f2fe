"""A replica pool simulated on a virtual clock: the controller's real logic without Ray, vLLM or real time.

    pool = SimulatedPool(cfg, out_uri, script=lambda prompt, k: f"<think>..</think>{k}",
                         fault=lambda event: "engine_fails" if event.method == "process" and event.replica == 2 else None,
                         nodes={"node-a": 1, "node-b": 1})
    pool.at(30.0, lambda: pool.drain_node("node-a", deadline_s=20))     # things that happen at virtual times
    summary = GenerationController(cfg, out_uri).run(pool)

Each simulated replica holds a real `UnitRunner` over a `ScriptedEngine` and
really writes and commits its shards to `out_uri` (so resume, exactly-once
and gc see real storage); only the cluster is simulated. Calls complete at
virtual times (`start_s` for an engine start, `prompt_s` per prompt of a
unit, scaled by the replica's `speed`), and `wait` jumps the clock to the
next completion, so a run with minutes of "engine time" and deadlines takes
milliseconds. `fault(event)` injects what a real cluster does:

- `"replica_dies"`: the replica's process is gone; its calls fail with `ReplicaLost`;
- `"engine_fails"`: its engine breaks; its calls in flight and every later one raise `EngineFailure`;
- `"hangs"`: this call never completes (a stuck engine);
- `"unit_error"`: this call alone raises `UnitFailed` (the unit's own error).

The cluster: `nodes` maps node names to how many replicas each can hold
(None: one node without limit). A replica that finds no free slot is
pending (`placement` says so) and is placed when a slot frees, a node is
added, or a killed replica's slot is released. `drain_node` marks a node
draining with a deadline (as Ray's drain API does); at the deadline the node
is preempted: its replicas are lost with `node_lost`. `remove_node` loses a
node at once.

`write=False` (the scaling benchmark) skips the engine and the storage: a
unit takes `unit_s(unit, replica)` virtual seconds and returns a synthetic
commit, so a million prompts over a thousand replicas cost only the
controller's own work. Used by the controller's unit tests and the scaling
benchmark; never by a real run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from potstill.pipelines.engines.protocol import EngineFailure
from potstill.pipelines.engines.scripted import ScriptedEngine
from potstill.pipelines.generate.plan import WorkUnit
from potstill.pipelines.generate.pool import Placement, ReplicaLost, UnitFailed
from potstill.pipelines.generate.replicas import Replica
from potstill.pipelines.generate.unit_runner import UnitResult, UnitRunner
from potstill.pipelines.output.shard_output import persist_unit
from potstill.pipelines.output.storage import Storage
from potstill.pipelines.verify import build_judge
from potstill.schemas.generation import GenerationConfig
from potstill.schemas.manifest import ShardCommit, ShardStats

FAULTS = ("replica_dies", "engine_fails", "hangs", "unit_error")
NEVER = float("inf")
ONE_NODE = "node-1"


@dataclass(frozen=True)
class CallEvent:
    """A call as the fault script sees it: which replica (1-based, in creation order), which method, which unit,
    when, and on which node (None while the replica is pending)."""

    replica: int
    method: str
    unit: WorkUnit | None
    time: float
    node: str | None = None


@dataclass
class _Node:
    slots: int | None  # None: unlimited
    replicas: set[int] = field(default_factory=set)
    drain_at: float | None = None  # the deadline of a drain in progress

    def free(self) -> bool:
        return self.drain_at is None and (self.slots is None or len(self.replicas) < self.slots)


@dataclass
class _SimReplica:
    index: int
    runner: UnitRunner | None
    speed: float = 1.0
    node: str | None = None
    ready_at: float = NEVER  # when its engine finishes starting (units queue until then, as on a real replica)
    start_error: BaseException | None = None
    lost: bool = False
    engine_broken: bool = False
    units_done: int = 0
    requests: int = 0
    calls: set[int] = field(default_factory=set)


@dataclass
class _Call:
    id: int
    rep: _SimReplica
    done_at: float
    method: str = ""
    value: Any = None
    error: BaseException | None = None
    samples: int = 0  # a unit's sequences in the engine until it is done (what load() reports)


class SimulatedPool:
    """`ReplicaPool` of simulated replicas on a virtual clock (see the module docstring)."""

    def __init__(self, cfg: GenerationConfig, out_uri: str, *, script: Callable[[str, int], str] | None = None,
                 fault: Callable[[CallEvent], str | None] | None = None, start_s: float = 5.0,
                 prompt_s: float = 0.01, speed: Callable[[int], float] | None = None,
                 batch_capacity: int | None = None, nodes: dict[str, int | None] | None = None,
                 write: bool = True, unit_s: Callable[[WorkUnit, int], float] | None = None,
                 tokens_per_sample: int = 100):
        self.cfg = cfg
        self.storage = Storage(out_uri, cfg.output.storage) if write else None
        self.script = script or (lambda prompt, k: f"<think>{prompt}</think>{k}")
        self.fault = fault or (lambda event: None)
        self.start_s, self.prompt_s = start_s, prompt_s
        self.speed = speed or (lambda index: 1.0)
        self.batch_capacity = batch_capacity
        self.write = write
        self.unit_s = unit_s
        self.tokens_per_sample = tokens_per_sample
        self.clock = 0.0
        self.created = 0
        self.killed: list[str] = []
        self.capacity_requests: list[int] = []
        self.nodes: dict[str, _Node] = {name: _Node(slots) for name, slots in (nodes or {ONE_NODE: None}).items()}
        self._replicas: dict[int, _SimReplica] = {}
        self._pending: list[int] = []  # replicas waiting for a slot, in creation order
        self._calls: dict[int, _Call] = {}
        self._heap: list[tuple[float, int]] = []  # (done_at, call id); stale entries are skipped
        self._done: set[int] = set()  # finished calls not yet returned by wait()
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._ids = itertools.count()
        self._judge = build_judge(cfg.verify) if write else None

    # -- test controls -------------------------------------------------------------------------
    def at(self, t: float, action: Callable[[], None]) -> None:
        """Run `action()` when the virtual clock reaches `t` (inside a `wait`)."""
        heapq.heappush(self._events, (t, next(self._ids), action))

    def add_node(self, name: str, slots: int | None = 1) -> None:
        self.nodes[name] = _Node(slots)
        self._place_pending()

    def drain_node(self, name: str, deadline_s: float | None) -> None:
        """Mark `name` draining: no new replica lands there; at the deadline the node is preempted."""
        node = self.nodes[name]
        node.drain_at = NEVER if deadline_s is None else self.clock + deadline_s
        if deadline_s is not None:
            self.at(node.drain_at, lambda: self.remove_node(name) if name in self.nodes else None)

    def remove_node(self, name: str) -> None:
        """The node is gone: its replicas are lost (`node_lost`), their calls fail now."""
        node = self.nodes.pop(name)
        for index in sorted(node.replicas):
            sim = self._replicas[index]
            self._lose(sim, ReplicaLost(f"replica-{index}: its node {name} died", node_lost=True))
        self._place_pending()

    def node_of(self, rep: Replica) -> str | None:
        return rep.handle.node

    # -- the ReplicaPool protocol --------------------------------------------------------------
    def create(self) -> Replica:
        self.created += 1
        runner = None
        if self.write:
            runner = UnitRunner(ScriptedEngine(self.script), self._judge, self.cfg.sampling, self.cfg.verify)
        sim = _SimReplica(self.created, runner, self.speed(self.created))
        self._replicas[sim.index] = sim
        self._pending.append(sim.index)
        self._place_pending()
        return Replica(f"replica-{self.created}", sim, gpus=self.cfg.replicas.gpus_per_replica or 0.0,
                       cpus=self.cfg.replicas.cpus_per_replica)

    def call(self, rep: Replica, method: str, *args: Any) -> int:
        sim: _SimReplica = rep.handle
        unit = args[0] if method in ("process", "generate") else None
        call = _Call(next(self._ids), sim, self.clock, method)
        self._calls[call.id] = call
        if sim.lost:
            call.error = ReplicaLost(f"{rep.name} is dead")
            return self._schedule(call)
        if method == "stats":
            runner = sim.runner
            call.value = {"units_done": sim.units_done, "engine_requests": runner.requests if runner else sim.requests,
                          "prompt_tokens": runner.prompt_tokens_processed if runner else 0,
                          "completion_tokens": runner.completion_tokens if runner else 0}
            return self._schedule(call)
        fault = self.fault(CallEvent(sim.index, method, unit, self.clock, sim.node))
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault {fault!r} is not one of {FAULTS}")
        sim.calls.add(call.id)
        if fault == "hangs":
            call.done_at = NEVER
        elif method == "start":
            self._start(call, fault)
        elif method == "load":
            self._load(call, below=args[1], timeout_s=args[2])
        else:
            self._run_unit(call, method, unit, fault)
        return self._schedule(call)

    def wait(self, calls: Iterable[int], timeout_s: float) -> list[int]:
        wanted = calls if isinstance(calls, Container) else set(calls)
        until = self.clock + timeout_s
        while True:
            self._collect()
            found = [c for c in self._done if c in wanted]
            if found or timeout_s == 0:
                self._done.difference_update(found)
                return found
            nxt = min(self._heap[0][0] if self._heap else NEVER, self._events[0][0] if self._events else NEVER)
            if nxt > until:
                self.clock = until
                return []
            self.clock = max(self.clock, nxt)
            self._fire_events()

    def result(self, call: int, timeout_s: float | None = None) -> Any:
        c = self._calls[call]
        if c.done_at > self.clock:
            raise UnitFailed(f"GetTimeoutError: call {call} is not done at t={self.clock:g}")
        del self._calls[call]
        self._done.discard(call)
        c.rep.calls.discard(call)
        if c.error is not None:
            raise c.error
        return c.value

    def kill(self, rep: Replica) -> None:
        self.killed.append(rep.name)
        self._lose(rep.handle, ReplicaLost(f"{rep.name} was killed"))

    def retire(self, rep: Replica) -> None:
        self.kill(rep)

    def now(self) -> float:
        return self.clock

    def placement(self, rep: Replica) -> Placement:
        sim: _SimReplica = rep.handle
        if sim.node is not None:
            return Placement(node_id=sim.node)
        free = sum(1 for n in self.nodes.values() if n.free())
        return Placement(waiting_for=f"1 replica slot: {len(self.nodes)} node(s), {free} with a free slot "
                                     f"({sum(n.drain_at is not None for n in self.nodes.values())} draining)")

    def draining_nodes(self) -> dict[str, float | None]:
        return {name: (None if n.drain_at == NEVER else n.drain_at) for name, n in self.nodes.items()
                if n.drain_at is not None}

    def request_capacity(self, replicas: int) -> None:
        self.capacity_requests.append(replicas)

    def location(self) -> str:
        return f"simulated cluster of {len(self.nodes)} node(s)"

    # -- simulation ----------------------------------------------------------------------------
    def _schedule(self, call: _Call) -> int:
        if call.done_at <= self.clock:
            self._done.add(call.id)
        elif call.done_at < NEVER:
            heapq.heappush(self._heap, (call.done_at, call.id))
        return call.id

    def _collect(self) -> None:
        """Move calls finished by now from the heap to the done set (skipping stale heap entries)."""
        while self._heap and self._heap[0][0] <= self.clock:
            t, cid = heapq.heappop(self._heap)
            c = self._calls.get(cid)
            if c is not None and c.done_at == t:
                self._done.add(cid)

    def _fire_events(self) -> None:
        while self._events and self._events[0][0] <= self.clock:
            _, _, action = heapq.heappop(self._events)
            action()

    def _reschedule(self, c: _Call, done_at: float) -> None:
        self._done.discard(c.id)
        c.done_at = done_at
        self._schedule(c)

    def _place_pending(self) -> None:
        still = []
        for index in self._pending:
            sim = self._replicas[index]
            if sim.lost:
                continue
            node = max((n for n in self.nodes.items() if n[1].free()), default=None,
                       key=lambda item: (NEVER if item[1].slots is None else item[1].slots - len(item[1].replicas)))
            if node is None:
                still.append(index)
                continue
            sim.node = node[0]
            node[1].replicas.add(index)
            for cid in list(sim.calls):  # a start sent while it waited now runs
                c = self._calls[cid]
                if c.method == "start" and c.done_at == NEVER and c.error is None and sim.start_error is None:
                    sim.ready_at = self.clock + self.start_s / sim.speed
                    self._reschedule(c, sim.ready_at)
        self._pending = still

    def _start(self, call: _Call, fault: str | None) -> None:
        sim = call.rep
        if sim.node is None:  # not placed yet: starts once it is
            call.done_at = NEVER
            call.value = {"replica_id": f"replica-{sim.index}", "batch_capacity": self.batch_capacity}
            return
        call.done_at = sim.ready_at = min(sim.ready_at, self.clock + self.start_s / sim.speed)
        if fault in ("engine_fails", "unit_error"):
            call.error = sim.start_error = EngineFailure(f"teacher engine failed to start on replica-{sim.index}")
        elif fault == "replica_dies":
            self._lose(sim, ReplicaLost(f"replica-{sim.index} died while starting"), call)
        else:
            call.value = {"replica_id": f"replica-{sim.index}", "batch_capacity": self.batch_capacity,
                          "node_id": sim.node}

    def _load(self, call: _Call, below: int, timeout_s: float) -> None:
        """The long poll: answers when the replica's engine holds fewer than `below` sequences (its units in
        flight x n), or after `timeout_s`, with the count at that moment."""
        running = sorted((c.done_at, c.samples) for cid in call.rep.calls
                         if (c := self._calls[cid]).samples and c.done_at > self.clock)
        pending = sum(samples for _, samples in running)
        at = self.clock
        for done_at, samples in running:
            if pending < below or done_at > self.clock + timeout_s:
                break
            at, pending = done_at, pending - samples
        if pending >= below:
            at = self.clock + timeout_s
        call.done_at, call.value = at, pending

    def _run_unit(self, call: _Call, method: str, unit: WorkUnit, fault: str | None) -> None:
        sim = call.rep
        call.samples = len(unit.prompts) * self.cfg.sampling.n
        took = self.unit_s(unit, sim.index) if self.unit_s is not None else self.prompt_s * len(unit.prompts)
        # A unit sent before the engine is up waits for it (the replica's process() awaits start()).
        call.done_at = max(self.clock, sim.ready_at) + took / sim.speed
        if sim.start_error is not None:
            call.done_at, call.error = sim.ready_at, sim.start_error
        elif sim.engine_broken or fault == "engine_fails":
            self._break_engine(sim, call)
        elif fault == "replica_dies":
            self._lose(sim, ReplicaLost(f"replica-{sim.index} died"), call)
        elif fault == "unit_error":
            call.error = UnitFailed(f"ValueError: unit {unit.shard_id} raised on replica-{sim.index}")
        elif not self.write:
            call.value = self._synthetic(unit, method)
            sim.requests += len(unit.prompts)
            sim.units_done += method == "process"
        else:
            result = asyncio.run(sim.runner.run(unit))
            if method == "generate":
                call.value = result
            else:
                call.value = persist_unit(self.storage, unit, result, self.cfg.output)
                sim.units_done += 1

    def _synthetic(self, unit: WorkUnit, method: str) -> ShardCommit | UnitResult:
        """What a unit returns without an engine or storage (write=False): counts only."""
        n = self.cfg.sampling.n
        samples = len(unit.prompts) * n
        stats = ShardStats.model_construct(prompts=len(unit.prompts), traces=samples, verified=samples, rejected=0,
                                           failed_prompts=0, samples_drawn=samples, prompt_tokens=0,
                                           completion_tokens=samples * self.tokens_per_sample)
        if method == "generate":
            return UnitResult(stats=stats)
        return ShardCommit.model_construct(run_id=unit.run_id, shard_id=unit.shard_id, attempt_id="simulated",
                                           data_path="", row_count=samples, size_bytes=0, sha256="", schema_hash="",
                                           prompt_ids=[], failed=[], stats=stats,
                                           committed_at=datetime.now(timezone.utc))

    def _break_engine(self, sim: _SimReplica, trigger: _Call) -> None:
        """The engine breaks as `trigger` completes: it and every call not done by then raise `EngineFailure`."""
        sim.engine_broken = True
        self._fail_from(sim, trigger.done_at, EngineFailure(f"engine of replica-{sim.index} died"), trigger)

    def _lose(self, sim: _SimReplica, error: ReplicaLost, trigger: _Call | None = None) -> None:
        """The replica is gone (now, or as `trigger` completes): calls not done by then fail with `error`."""
        sim.lost = True
        if sim.node is not None and sim.node in self.nodes:
            self.nodes[sim.node].replicas.discard(sim.index)
            self._place_pending()  # the freed slot takes a pending replica at once
        self._fail_from(sim, self.clock if trigger is None else trigger.done_at, error, trigger)

    def _fail_from(self, sim: _SimReplica, at: float, error: BaseException, trigger: _Call | None) -> None:
        """Calls of `sim` still running at `at` (and `trigger`) fail with `error` at `at`; finished ones keep
        their results, as Ray keeps the results of tasks that finished before their actor died."""
        for call_id in sim.calls:
            c = self._calls[call_id]
            if c is trigger or c.done_at > at:
                c.value, c.error = None, error
                if c is trigger:
                    c.done_at = at
                else:
                    self._reschedule(c, at)
