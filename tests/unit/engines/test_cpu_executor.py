"""Which vLLM engines compute in their engine-core process, and that the variable allowing it is set only while
the engine is built."""

from __future__ import annotations

import os

import pytest

from potstill.pipelines.engines.cpu_executor import MULTIPROCESSING_ENV, model_in_engine_core, wants_model_in_engine_core


@pytest.mark.parametrize(("args", "on_cpu", "expected"), [
    ({"tensor_parallel_size": 1}, True, True),
    ({}, True, True),
    ({"tensor_parallel_size": 1}, False, False),  # GPU engines keep vLLM's choice
    ({"tensor_parallel_size": 2}, True, False),
    ({"tensor_parallel_size": 1, "pipeline_parallel_size": 2}, True, False),
    ({"distributed_executor_backend": "mp"}, True, False),  # the user's teacher.engine_kwargs win
])
def test_only_one_worker_cpu_engines_without_a_chosen_executor_compute_in_the_engine_core(args, on_cpu, expected):
    assert wants_model_in_engine_core(args, on_cpu) is expected


def test_the_variable_is_zero_while_the_engine_is_built_and_restored_after(monkeypatch):
    monkeypatch.setenv(MULTIPROCESSING_ENV, "1")
    args = {"tensor_parallel_size": 1}
    with model_in_engine_core(args, on_cpu=True):
        assert os.environ[MULTIPROCESSING_ENV] == "0"
    assert args["distributed_executor_backend"] == "uni"
    assert os.environ[MULTIPROCESSING_ENV] == "1"


def test_an_unset_variable_is_unset_again_even_when_the_engine_fails_to_start(monkeypatch):
    monkeypatch.setenv(MULTIPROCESSING_ENV, "")
    monkeypatch.delenv(MULTIPROCESSING_ENV)
    with pytest.raises(RuntimeError), model_in_engine_core({}, on_cpu=True):
        raise RuntimeError("engine failed")
    assert MULTIPROCESSING_ENV not in os.environ


def test_gpu_engines_are_left_alone(monkeypatch):
    monkeypatch.setenv(MULTIPROCESSING_ENV, "")
    monkeypatch.delenv(MULTIPROCESSING_ENV)
    args = {"tensor_parallel_size": 1}
    with model_in_engine_core(args, on_cpu=False):
        assert MULTIPROCESSING_ENV not in os.environ
    assert "distributed_executor_backend" not in args
