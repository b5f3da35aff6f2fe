"""Configured fault injection for the chaos tests: a `TeacherEngine` wrapper and a pre-commit crash.

    faults:                                   # GenerationConfig.faults (test hook, default off)
      state_dir: /tmp/faults
      rules:
        - {action: engine_dead, marker: "What is 123 + 456?", times: 1}
        - {action: hold, marker: "What is 500 + 250?", release_file: go}   # waits until state_dir/go exists

`build_engine` wraps the real engine in `FaultyEngine` when rules are set, and
the replica calls `crash_before_commit` between writing a shard and committing
it. A rule fires for a request whose prompt text contains its marker, on every
match or only on the first `times` matches of the run (counted with exclusive
file creates in `state_dir`, so replicas in other processes share the count).
Nothing here is monkeypatched into production code: without `faults` none of
it runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

from potstill.pipelines.engines.protocol import EngineFailure, Generation, TeacherEngine
from potstill.schemas.generation import FaultRule, FaultsConfig, OutputConfig

if TYPE_CHECKING:
    from potstill.pipelines.generate.plan import WorkUnit
    from potstill.pipelines.output.storage import Storage
    from potstill.pipelines.generate.unit_runner import UnitResult

log = logging.getLogger("potstill.faults")

ENGINE_ACTIONS = frozenset({"engine_dead", "engine_failure", "hang", "exit", "hold"})
_HOLD_POLL_S = 0.2
_NOTICE_S = 1.0  # after killing an engine's processes, time for its liveness monitor to mark it dead


def prompt_text(messages: list[dict[str, str]]) -> str:
    """The text markers are matched against: every message's content."""
    return "\n".join(m.get("content", "") for m in messages)


class FaultPlan:
    """The rules of one run and their shared firing counts."""

    def __init__(self, cfg: FaultsConfig):
        self.cfg = cfg
        if cfg.state_dir:
            os.makedirs(cfg.state_dir, exist_ok=True)

    def matching(self, text: str, actions: frozenset[str]) -> list[tuple[int, FaultRule]]:
        return [(i, r) for i, r in enumerate(self.cfg.rules) if r.action in actions and r.marker in text]

    def claim(self, index: int, rule: FaultRule) -> bool:
        """Whether the rule fires now: always without `times`, else while fewer than `times` firings are recorded."""
        if rule.times is None:
            return True
        for k in range(rule.times):
            path = os.path.join(self.cfg.state_dir or "", f"rule{index}-{k}")
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return True
            except FileExistsError:
                continue
        return False

    def firing(self, text: str, actions: frozenset[str]) -> FaultRule | None:
        """The first matching rule that fires now (claims its firing), or None."""
        for index, rule in self.matching(text, actions):
            if self.claim(index, rule):
                return rule
        return None


def _prompt_key(prompt: Any) -> Any:
    """A hashable key of an encoded prompt: token ids (vLLM) or a conversation (an API engine)."""
    if prompt and all(isinstance(t, int) for t in prompt):
        return tuple(prompt)
    return json.dumps(prompt, sort_keys=True)


def _kill_engine_processes() -> int:
    """SIGKILL this process's children (an engine's core and workers), wait for them; how many were killed."""
    import psutil

    victims = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" in " ".join(child.cmdline()):  # multiprocessing's helper, not the engine's
                continue
            child.send_signal(signal.SIGKILL)
            victims.append(child)
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(victims, timeout=10)
    return len(victims)


class FaultyEngine:
    """`TeacherEngine` that injects the configured engine faults in front of a real engine."""

    def __init__(self, inner: TeacherEngine, plan: FaultPlan):
        self.inner = inner
        self.plan = plan
        self.model_name = inner.model_name
        self.revision = inner.revision
        self._marked: dict[Any, str] = {}  # encoded prompts some rule matches -> their text

    @property
    def batch_capacity(self) -> int | None:
        return self.inner.batch_capacity

    async def start(self) -> None:
        await self.inner.start()

    def encode_chats(self, conversations: list[list[dict[str, str]]]) -> list[Any | Exception]:
        encoded = self.inner.encode_chats(conversations)
        for messages, prompt in zip(conversations, encoded):
            text = prompt_text(messages)
            if not isinstance(prompt, Exception) and self.plan.matching(text, ENGINE_ACTIONS):
                self._marked[_prompt_key(prompt)] = text
        return encoded

    async def generate(self, prompt: Any, n: int, request_id: str, max_tokens: int | None = None) -> Generation:
        text = self._marked.get(_prompt_key(prompt))
        rule = self.plan.firing(text, ENGINE_ACTIONS) if text is not None else None
        if rule is not None:
            log.warning("fault injection: %s on request %s", rule.action, request_id)
            if rule.action == "exit":
                os._exit(17)
            if rule.action == "hang":
                await asyncio.Event().wait()
            if rule.action == "hold":  # a gate a test opens: the request waits for the file, then runs normally
                release = os.path.join(self.plan.cfg.state_dir or "", rule.release_file or "")
                with open(f"{release}.held", "a"):  # an observable state: something waits at this gate
                    pass
                while not os.path.exists(release):
                    await asyncio.sleep(_HOLD_POLL_S)
            if rule.action == "engine_failure":
                raise EngineFailure(f"injected engine failure on request {request_id}")
            if rule.action == "engine_dead":
                if not await asyncio.to_thread(_kill_engine_processes):
                    raise EngineFailure(f"injected engine death on request {request_id} (the engine has no process to kill)")
                # Let the engine's own monitor notice first, as it would have long before a real request arrived;
                # the request below then meets the dead engine and raises the engine's own error.
                await asyncio.sleep(_NOTICE_S)
        return await self.inner.generate(prompt, n, request_id, max_tokens)

    async def shutdown(self) -> None:
        await self.inner.shutdown()


def crash_before_commit(plan: FaultPlan | None, storage: Storage, unit: WorkUnit, result: UnitResult,
                        output: OutputConfig) -> None:
    """If an `exit_before_commit` rule fires for `unit`: write its shard's data object, then exit the process.

    Leaves exactly what a crash between the data PUT and the commit leaves: an
    orphan data object that no commit names.
    """
    if plan is None:
        return
    from potstill.pipelines.output.shard_writer import records_to_table, write_shard

    text = "\n".join(prompt_text([m.model_dump() for m in p.messages]) for p in unit.prompts)
    rule = plan.firing(text, frozenset({"exit_before_commit"}))
    if rule is None:
        return
    written = write_shard(storage, unit.run_id, unit.shard_id, records_to_table(result.rows), output.compression,
                          output.compression_level)
    log.warning("fault injection: exiting after writing %s, before its commit", written.data_path)
    os._exit(17)
