"""The GPU proof's ceilings (`benchmarks/gpu/roofline.py`): the decode roofline replay, the device table, the FLOPs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks.gpu.models import StudentShape, TeacherShape  # noqa: E402
from benchmarks.gpu.roofline import CPU_NOMINAL, DeviceSpec, decode_roofline, device_spec, training_flops  # noqa: E402

SPEC = DeviceSpec("test", hbm_bytes_per_s=1e9, bf16_dense_flops=1e18, source="test")


def test_llama31_8b_and_qwen2_1p5b_shapes_have_their_published_sizes():
    teacher = TeacherShape.llama31_8b()
    assert teacher.params() == 8_030_261_248
    assert teacher.kv_bytes_per_token(2) == 128 * 1024  # 32 layers x 8 KV heads x 128 x K,V x bf16
    assert teacher.decode_weight_params() == teacher.params() - 128256 * 4096
    s = StudentShape.qwen2_1p5b()
    assert (s.hidden, s.layers, s.heads, s.kv_heads, s.vocab) == (1536, 28, 12, 2, 151936)


def test_decode_roofline_charges_weights_once_and_each_running_sequence_its_kv_at_its_current_length():
    shape = TeacherShape.tiny()
    w, kv = shape.decode_weight_params() * 2, shape.kv_bytes_per_token(2)
    # Two sequences: prompts 10 and 4 tokens, budgets 2 and 1 -> steps read (w + (10 + 4) kv) then (w + 11 kv).
    roof = decode_roofline([10, 4], [2, 1], shape, SPEC, max_num_seqs=8)
    seconds = (w + 14 * kv) / 1e9 + (w + 11 * kv) / 1e9
    assert roof["decode_steps"] == 2 and roof["output_tokens"] == 3
    assert roof["memory_tok_s"] == pytest.approx(3 / seconds)


def test_decode_roofline_runs_at_most_max_num_seqs_and_admits_the_longest_budget_first():
    shape = TeacherShape.tiny()
    # One slot: the budget-3 sequence runs first (priority), then the budget-1 one: 4 steps of batch 1.
    roof = decode_roofline([5, 5], [1, 3], shape, SPEC, max_num_seqs=1, priority=True)
    assert (roof["decode_steps"], roof["output_tokens"], roof["mean_batch"]) == (4, 4, 1.0)
    w, kv = shape.decode_weight_params() * 2, shape.kv_bytes_per_token(2)
    seconds = sum(w + c * kv for c in (5, 6, 7, 5)) / 1e9
    assert roof["memory_tok_s"] == pytest.approx(4 / seconds)
    # With a dense peak so low that compute binds, the combined ceiling is below the memory one.
    slow = DeviceSpec("slow", 1e12, 1e3, "test")
    both = decode_roofline([5, 5], [1, 3], shape, slow, max_num_seqs=1)
    assert both["memory_and_compute_tok_s"] < both["memory_tok_s"]


def test_device_table_matches_names_and_says_when_it_assumed():
    assert device_spec("NVIDIA H200").hbm_bytes_per_s == 4.8e12
    h100 = device_spec("NVIDIA H100 80GB HBM3")
    assert (h100.hbm_bytes_per_s, h100.bf16_dense_flops) == (3.35e12, 989e12)
    assert device_spec("NVIDIA H100 PCIe").hbm_bytes_per_s == 2.0e12
    assert "assumed" in device_spec("Some Future GPU").source
    assert device_spec(None) is CPU_NOMINAL and "nominal" in CPU_NOMINAL.source


def test_training_flops_count_decoder_head_and_causal_attention_per_document():
    # 6 x 100 params x 10 positions + 6 x 20 head params x 4 labelled + 6 x 2 layers x 8 width x (3^2 + 7^2)
    assert training_flops(100, 20, 10, 4, [3, 7], layers=2, attn_width=8) == 6000 + 480 + 96 * 58


def test_a_failing_phase_is_recorded_and_the_student_keys_stay_present_as_none():
    from benchmarks.gpu.proof import TINY, attempt, student_fields

    errors: dict[str, str] = {}
    phases: dict[str, float] = {}
    assert attempt("pipeline", lambda: 1 / 0, errors, phases) is None
    assert errors == {"pipeline": "ZeroDivisionError: division by zero"} and "pipeline" in phases
    assert attempt("student", lambda: 7, errors, phases) == 7 and "student" not in errors
    fields = student_fields(TINY, CPU_NOMINAL, None)
    assert fields["student_mfu"] is None and fields["student_tokens_per_s_per_gpu"] is None
