"""Training plans: parameter counts of published models, memory parts by strategy, the s1 recipe on 16 H100
against its published 26 minutes, and refusals that name the fields to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from potstill.pipelines.planning.hardware import GiB, gpu
from potstill.pipelines.planning.shapes import KNOWN, known_shape, shape_from_config
from potstill.pipelines.planning.train_plan import DataSize, plan_training
from potstill.schemas import load_config
from potstill.schemas.training import TrainingConfig

RECIPES = Path(__file__).resolve().parents[3] / "examples" / "recipes"


@pytest.mark.parametrize(("name", "billions"), [
    ("Qwen/Qwen2.5-1.5B-Instruct", 1.54), ("Qwen/Qwen2.5-7B-Instruct", 7.62), ("Qwen/Qwen2.5-32B-Instruct", 32.76),
    ("Qwen/Qwen2.5-72B-Instruct", 72.71), ("meta-llama/Llama-3.1-8B-Instruct", 8.03),
    ("meta-llama/Llama-3.3-70B-Instruct", 70.55), ("deepseek-ai/DeepSeek-R1", 671.03)])
def test_parameter_counts_match_the_published_models(name: str, billions: float) -> None:
    assert KNOWN[name].params / 1e9 == pytest.approx(billions, abs=0.01)
    assert KNOWN["deepseek-ai/DeepSeek-R1"].active_params / 1e9 == pytest.approx(37.5, abs=0.1)  # 37B activated


def test_a_config_json_gives_the_same_shape_as_the_table_and_names_are_matched_by_folder() -> None:
    config = {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 5120, "num_hidden_layers": 64,
              "num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 27648,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    assert shape_from_config(config).params == KNOWN["Qwen/Qwen2.5-32B-Instruct"].params
    assert known_shape("s3://bucket/models/qwen2.5-32b-instruct").name == "Qwen/Qwen2.5-32B-Instruct"
    assert known_shape("/models/unknown-model") is None
    with pytest.raises(ValueError, match="no 'hidden_size'"):
        shape_from_config({"vocab_size": 10})


def _plan(path: str, workers: int | None = None, **overrides):
    cfg = load_config(RECIPES / path, TrainingConfig, overrides)
    data = DataSize(cfg.plan.traces, cfg.plan.mean_trace_tokens, "plan hints")
    return plan_training(cfg, known_shape(cfg.student.model), data, workers=workers)


def test_s1_on_16_h100_fits_80gb_and_takes_about_the_published_26_minutes() -> None:
    plan = _plan("s1/train.yaml")
    assert plan.fits and plan.gpus == 16 and plan.memory["total"] <= gpu("H100-80GB").memory_bytes
    assert plan.memory_with_checkpointing < plan.memory_without_checkpointing
    assert 26 / 2 <= plan.hours * 60 <= 26 * 2  # at the MFU the recipe states
    assert plan.mfu == 0.25 and plan.steps == 50 and plan.usd == pytest.approx(plan.hours * 16 * 2.5)
    parts = {"parameters", "gradients", "optimizer", "gathered_layers", "gathered_head", "loss", "activations"}
    assert parts <= plan.memory.keys()
    assert plan.memory["parameters"] == pytest.approx(4 * 32.76e9 / 16, rel=1e-3)  # float32 shards


def test_the_70b_student_on_8_gpus_is_refused_naming_what_to_change() -> None:
    assert _plan("r1-distill/train-70b.yaml").fits  # as shipped: 32 GPUs
    plan = _plan("r1-distill/train-70b.yaml", workers=8)
    assert not plan.fits
    (why,) = plan.problems
    assert "scaling.num_workers: 29 or more" in why and "strategy.cpu_offload: true" in why
    offloaded = _plan("r1-distill/train-70b.yaml", workers=8, **{"strategy.cpu_offload": True})
    assert offloaded.fits and offloaded.memory["optimizer"] == 0 and offloaded.host_memory == 16 * offloaded.params


def test_ddp_and_missing_checkpointing_and_oversized_batches_are_named() -> None:
    ddp = _plan("r1-distill/train-7b.yaml", **{"strategy.kind": "ddp"})
    assert not ddp.fits and "strategy.kind: fsdp" in ddp.problems[0]
    no_ac = _plan("s1/train.yaml", **{"strategy.activation_checkpointing": False})
    assert not no_ac.fits and "strategy.activation_checkpointing: true" in no_ac.problems[0]
    huge = _plan("s1/train.yaml", **{"run.micro_batch_size": 8, "run.global_batch_size": 128})
    assert not huge.fits and "run.micro_batch_size or packing.max_tokens" in huge.problems[0]
    assert huge.memory["activations"] > 8 * GiB
