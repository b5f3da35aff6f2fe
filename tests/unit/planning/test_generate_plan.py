"""Generation plans: replicas that fit, KV cache per replica (dense and latent attention), tokens/s at the stated
rate, and refusals naming the fields to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from potstill.pipelines.planning.generate_plan import GenAssumptions, plan_generation
from potstill.pipelines.planning.hardware import GiB, gpu
from potstill.pipelines.planning.shapes import KNOWN
from potstill.schemas import GenerationConfig, load_config

RECIPES = Path(__file__).resolve().parents[3] / "examples" / "recipes"


def test_r1_teacher_fits_h200_replicas_and_is_refused_on_h100_naming_tensor_parallelism() -> None:
    cfg = load_config(RECIPES / "r1-distill" / "generate.yaml", GenerationConfig)
    shape = KNOWN["deepseek-ai/DeepSeek-R1"]
    plan = plan_generation(cfg, shape, GenAssumptions(gpus=20, tokens_per_s_per_gpu=800, prompts=1000))
    assert plan.fits and plan.gpu == "H200-141GB"  # from replicas.accelerator_type
    assert plan.replicas == 2 and plan.gpus == 16  # 20 GPUs hold two 8-GPU replicas
    assert plan.weights_per_gpu == pytest.approx(671.03e9 / 8, rel=1e-3)
    # latent attention: the compressed KV (576 values a layer) is whole on every GPU of a replica
    assert plan.kv_cache_tokens == pytest.approx((0.9 * gpu('H200-141GB').memory_bytes - shape.params / 8 - 4 * GiB) / (61 * 576 * 2), rel=1e-3)
    assert plan.sequences_at_full_length >= 1 and plan.tokens_per_s == 16 * 800
    assert plan.samples == (2000, 16000) and plan.completion_tokens == 16000 * 15000
    refused = plan_generation(cfg, shape, GenAssumptions(gpu="H100-80GB", gpus=32))
    assert not refused.fits and "teacher.tensor_parallel_size: 16" in refused.problems[0]


def test_a_dense_teacher_splits_its_kv_heads_and_too_few_gpus_are_named() -> None:
    cfg = GenerationConfig.model_validate({"prompts": {"arithmetic": {"count": 100}},
                                           "teacher": {"model": "/m/QwQ-32B", "dtype": "bfloat16", "tensor_parallel_size": 2,
                                                       "max_model_len": 32768},
                                           "replicas": {"max_replicas": 4}, "sampling": {"n": 4, "max_tokens": 16000}})
    shape = KNOWN["Qwen/QwQ-32B"]
    plan = plan_generation(cfg, shape, GenAssumptions(gpus=8, prompts=100))
    per_gpu_token = 2 * 64 * 4 * 128 * 2  # 8 KV heads over 2 GPUs: 4 each
    budget = 0.9 * gpu("H100-80GB").memory_bytes - shape.params * 2 / 2 - 4 * GiB
    assert plan.fits and plan.replicas == 4 and plan.kv_cache_tokens == int(budget // per_gpu_token)
    assert plan.samples == (400, 400) and plan.completion_tokens == 400 * 8000
    short = plan_generation(cfg, shape, GenAssumptions(gpus=1))
    assert not short.fits and "a replica needs 2 GPUs but 1 are available" in short.problems[0]
