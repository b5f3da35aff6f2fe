"""The shipped arithmetic teacher reasons correctly in the real vLLM CPU engine and in transformers."""

from __future__ import annotations

from typing import Any

import pytest

from potstill.pipelines.arithmetic import problems as arithmetic
from potstill.pipelines.models.assets import model_revision, resolve_model
from potstill.schemas.generation import SHIPPED_TEACHER

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(teacher_greedy) -> dict[str, Any]:
    return teacher_greedy  # tests/integration/conftest.py: 200 fresh problems, greedy, in vLLM


def test_vllm_greedy_accuracy_on_fresh_held_out_problems(demo: dict[str, Any]) -> None:
    assert demo["n"] == 200 and demo["model"] == SHIPPED_TEACHER
    assert demo["accuracy"] >= 0.95, demo
    assert demo["with_think_block"] == 200 and demo["finished"] == 200, demo
    assert demo["output_tokens_per_s"] > 0


def test_transformers_greedy_matches_vllm(demo: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(SHIPPED_TEACHER)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    question = demo["sample"]["prompt"]
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, do_sample=False, max_new_tokens=256)
    text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text == demo["sample"]["completion"]
    a, b = (int(x) for x in question.removeprefix("What is ").removesuffix("?").split(" + "))
    assert text == arithmetic.completion_text(a, b)


def test_shipped_revision_is_a_stable_content_hash() -> None:
    path = resolve_model(SHIPPED_TEACHER)
    assert model_revision(path) == model_revision(path)
    assert len(model_revision(path)) == 12
