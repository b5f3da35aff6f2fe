"""A replica pool simulated on a virtual clock: the controller's real logic without Ray, vLLM or real time.

    pool = SimulatedPool(cfg, out_uri, script=lambda prompt, k: f"<think>..</think>{k}",
                         fault=lambda event: "engine_fails" if event.method == "process" and event.replica == 2 else None)
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

Used by the controller's unit tests and the scaling benchmark; never by a real run.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from potstill.pipelines.engines.protocol import EngineFailure
from potstill.pipelines.engines.scripted import ScriptedEngine
from potstill.pipelines.generate.plan import WorkUnit
from potstill.pipelines.generate.pool import ReplicaLost, UnitFailed
from potstill.pipelines.generate.replicas import Replica
from potstill.pipelines.generate.unit_runner import UnitRunner
from potstill.pipelines.output.shard_output import persist_unit
from potstill.pipelines.output.storage import Storage
from potstill.pipelines.verify import build_judge
from potstill.schemas.generation import GenerationConfig

FAULTS = ("replica_dies", "engine_fails", "hangs", "unit_error")
NEVER = float("inf")


@dataclass(frozen=True)
class CallEvent:
    """A call as the fault script sees it: which replica (1-based, in creation order), which method, which unit."""

    replica: int
    method: str
    unit: WorkUnit | None
    time: float


@dataclass
class _SimReplica:
    index: int
    runner: UnitRunner
    speed: float = 1.0
    ready_at: float = NEVER  # when its engine finishes starting (units queue until then, as on a real replica)
    start_error: BaseException | None = None
    lost: bool = False
    engine_broken: bool = False
    units_done: int = 0
    calls: set[int] = field(default_factory=set)


@dataclass
class _Call:
    id: int
    rep: _SimReplica
    done_at: float
    value: Any = None
    error: BaseException | None = None


class SimulatedPool:
    """`ReplicaPool` of simulated replicas on a virtual clock (see the module docstring)."""

    def __init__(self, cfg: GenerationConfig, out_uri: str, *, script: Callable[[str, int], str] | None = None,
                 fault: Callable[[CallEvent], str | None] | None = None, start_s: float = 5.0,
                 prompt_s: float = 0.01, speed: Callable[[int], float] | None = None,
                 batch_capacity: int | None = None):
        self.cfg = cfg
        self.storage = Storage(out_uri, cfg.output.storage)
        self.script = script or (lambda prompt, k: f"<think>{prompt}</think>{k}")
        self.fault = fault or (lambda event: None)
        self.start_s, self.prompt_s = start_s, prompt_s
        self.speed = speed or (lambda index: 1.0)
        self.batch_capacity = batch_capacity
        self.clock = 0.0
        self.created = 0
        self.killed: list[str] = []
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count()
        self._judge = build_judge(cfg.verify)

    # -- the ReplicaPool protocol --------------------------------------------------------------
    def create(self) -> Replica:
        self.created += 1
        engine = ScriptedEngine(self.script)
        runner = UnitRunner(engine, self._judge, self.cfg.sampling, self.cfg.verify)
        return Replica(f"replica-{self.created}", _SimReplica(self.created, runner, self.speed(self.created)),
                       gpus=self.cfg.replicas.gpus_per_replica or 0.0, cpus=self.cfg.replicas.cpus_per_replica)

    def call(self, rep: Replica, method: str, *args: Any) -> int:
        sim: _SimReplica = rep.handle
        unit = args[0] if method in ("process", "generate") else None
        call = _Call(next(self._ids), sim, self.clock)
        self._calls[call.id] = call
        if sim.lost:
            call.error = ReplicaLost(f"{rep.name} is dead")
            return call.id
        if method == "stats":
            call.value = {"units_done": sim.units_done, "engine_requests": sim.runner.requests,
                          "prompt_tokens": sim.runner.prompt_tokens_processed,
                          "completion_tokens": sim.runner.completion_tokens}
            return call.id
        fault = self.fault(CallEvent(sim.index, method, unit, self.clock))
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault {fault!r} is not one of {FAULTS}")
        sim.calls.add(call.id)
        if fault == "hangs":
            call.done_at = NEVER
        elif method == "start":
            self._start(call, fault)
        elif method == "load":
            call.value = sim.runner.sequences_pending
        else:
            self._run_unit(call, method, unit, fault)
        return call.id

    def wait(self, calls: Iterable[int], timeout_s: float) -> list[int]:
        calls = list(calls)
        done = [c for c in calls if self._calls[c].done_at <= self.clock]
        if done or timeout_s == 0 or not calls:
            return done
        nearest = min(self._calls[c].done_at for c in calls)
        self.clock = min(nearest, self.clock + timeout_s)
        return [c for c in calls if self._calls[c].done_at <= self.clock]

    def result(self, call: int, timeout_s: float | None = None) -> Any:
        c = self._calls[call]
        if c.done_at > self.clock:
            raise UnitFailed(f"GetTimeoutError: call {call} is not done at t={self.clock:g}")
        del self._calls[call]
        c.rep.calls.discard(call)
        if c.error is not None:
            raise c.error
        return c.value

    def kill(self, rep: Replica) -> None:
        self.killed.append(rep.name)
        self._lose(rep.handle, ReplicaLost(f"{rep.name} was killed"))

    def now(self) -> float:
        return self.clock

    # -- simulation ----------------------------------------------------------------------------
    def _start(self, call: _Call, fault: str | None) -> None:
        sim = call.rep
        call.done_at = sim.ready_at = min(sim.ready_at, self.clock + self.start_s / sim.speed)
        if fault in ("engine_fails", "unit_error"):
            call.error = sim.start_error = EngineFailure(f"teacher engine failed to start on replica-{sim.index}")
        elif fault == "replica_dies":
            self._lose(sim, ReplicaLost(f"replica-{sim.index} died while starting"), call)
        else:
            call.value = {"replica_id": f"replica-{sim.index}", "batch_capacity": self.batch_capacity}

    def _run_unit(self, call: _Call, method: str, unit: WorkUnit, fault: str | None) -> None:
        sim = call.rep
        # A unit sent before the engine is up waits for it (the replica's process() awaits start()).
        call.done_at = max(self.clock, sim.ready_at) + self.prompt_s * len(unit.prompts) / sim.speed
        if sim.start_error is not None:
            call.done_at, call.error = sim.ready_at, sim.start_error
        elif sim.engine_broken or fault == "engine_fails":
            self._break_engine(sim, call)
        elif fault == "replica_dies":
            self._lose(sim, ReplicaLost(f"replica-{sim.index} died"), call)
        elif fault == "unit_error":
            call.error = UnitFailed(f"ValueError: unit {unit.shard_id} raised on replica-{sim.index}")
        else:
            result = asyncio.run(sim.runner.run(unit))
            if method == "generate":
                call.value = result
            else:
                call.value = persist_unit(self.storage, unit, result, self.cfg.output)
                sim.units_done += 1

    def _break_engine(self, sim: _SimReplica, trigger: _Call) -> None:
        """The engine breaks as `trigger` completes: it and every call not done by then raise `EngineFailure`."""
        sim.engine_broken = True
        self._fail_from(sim, trigger.done_at, EngineFailure(f"engine of replica-{sim.index} died"), trigger)

    def _lose(self, sim: _SimReplica, error: ReplicaLost, trigger: _Call | None = None) -> None:
        """The replica is gone (now, or as `trigger` completes): calls not done by then fail with `error`."""
        sim.lost = True
        self._fail_from(sim, self.clock if trigger is None else trigger.done_at, error, trigger)

    def _fail_from(self, sim: _SimReplica, at: float, error: BaseException, trigger: _Call | None) -> None:
        """Calls of `sim` still running at `at` (and `trigger`) fail with `error` at `at`; finished ones keep
        their results, as Ray keeps the results of tasks that finished before their actor died."""
        for call_id in sim.calls:
            c = self._calls[call_id]
            if c is trigger or c.done_at > at:
                c.done_at, c.value, c.error = at, None, error
