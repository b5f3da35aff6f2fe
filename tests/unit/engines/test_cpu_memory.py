"""The pre-start check of the memory vLLM's CPU backend is about to claim (pure logic; the real engine's
refusal is in tests/integration/test_vllm_engine.py)."""

from __future__ import annotations

from potstill.pipelines.engines.cpu_memory import GIB, cpu_memory_problem, env_override

NODE = (16 * GIB, 10 * GIB)  # total, available


def test_the_default_fraction_of_a_busy_node_names_kv_cache_gib_and_the_numbers():
    problem = cpu_memory_problem(None, 0.9, None, [NODE])
    assert problem is not None
    assert "teacher.kv_cache_gib is not set" in problem and "teacher.gpu_memory_utilization (0.9)" in problem
    assert "16.0 GiB of memory, 14.4 GiB" in problem and "only 10.0 GiB is free" in problem


def test_a_fraction_that_fits_passes():
    assert cpu_memory_problem(None, 0.5, None, [NODE]) is None


def test_an_explicit_cache_size_is_checked_against_free_memory():
    assert cpu_memory_problem(2 * GIB, 0.9, None, [NODE]) is None  # the fraction no longer applies
    problem = cpu_memory_problem(12 * GIB, 0.9, None, [NODE])
    assert problem is not None and "lower teacher.kv_cache_gib" in problem and "12.0 GiB KV cache" in problem


def test_the_environment_variable_wins_over_the_config_as_it_does_in_vllm():
    assert cpu_memory_problem(12 * GIB, 0.9, "2", [NODE]) is None
    problem = cpu_memory_problem(None, 0.9, "11", [NODE])
    assert problem is not None and problem.startswith("VLLM_CPU_KVCACHE_SPACE=11") and "teacher.kv_cache_gib" in problem
    assert cpu_memory_problem(None, 0.5, "", [NODE]) is None  # empty: unset, as vLLM reads it


def test_one_node_that_fits_is_enough():
    busy, idle = (16 * GIB, 2 * GIB), (16 * GIB, 15 * GIB)
    assert cpu_memory_problem(None, 0.9, None, [busy, idle]) is None
    assert cpu_memory_problem(None, 0.9, None, [busy, busy]) is not None
    assert cpu_memory_problem(None, 0.9, None, []) is None


def test_the_environment_overriding_a_configured_size_is_called_out():
    warning = env_override(2 * GIB, "1")
    assert warning is not None and "VLLM_CPU_KVCACHE_SPACE=1" in warning and "teacher.kv_cache_gib's 2.0 GiB" in warning
    assert env_override(GIB, "1") is None  # the same size: nothing is lost
    assert env_override(None, "1") is None and env_override(2 * GIB, None) is None and env_override(2 * GIB, "") is None
