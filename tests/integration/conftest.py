"""Every integration test starts real parts (vLLM, Ray, moto, Ray Train, subprocess CLIs): all are marked slow,
so `pytest -m "not slow"` runs only the pure unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def vllm_server_booting(tmp_path_factory):
    """`vllm serve` of the shipped teacher, launched but not waited for: a fixture that has other work to do first
    (e.g. start a Ray cluster) requests this, so the server boots meanwhile; `vllm_server` then waits for it.

    One per test module, stopped when the module ends: a server kept for the session would hold its memory and
    its worker's pinned core through every later test (CPU training binds around a vLLM worker's core)."""
    import sys

    sys.path.insert(0, str(_HERE))  # importlib mode: the helper modules here are not importable by package
    from vllm_server import VllmServer

    server = VllmServer(tmp_path_factory.mktemp("vllm-serve")).launch()
    try:
        yield server
    finally:
        server.__exit__()


@pytest.fixture(scope="module")
def vllm_server(vllm_server_booting):
    """The module's `vllm serve` of the shipped teacher, ready (a module's API-teacher tests share it)."""
    return vllm_server_booting.wait_ready()


@pytest.fixture(scope="session")
def teacher_greedy() -> dict:
    """The shipped teacher's greedy run on 200 fresh problems (seed 1234) in the real vLLM engine: test_teacher's
    accuracy checks and test_generate's verified-fraction check share this one engine start."""
    from potstill.pipelines.jobs.teacher_demo import run_teacher_demo

    seed = 1234
    return {**run_teacher_demo(n=200, seed=seed), "seed": seed}
