"""Chat formats: the whole conversation, the reasoning where the student's template wants it.

    .venv/bin/pytest tests/unit/export/test_formats.py -q
"""

from __future__ import annotations

import json

import pytest

from potstill.pipelines.export.formats import ExportFormatter, assistant_turn
from potstill.schemas.export import ExportConfig

TRACE = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 7 + 9?"}],
    "completion": "<think>\n7+9=16\n</think>\n16", "reasoning": "7+9=16", "answer": "16",
    "run_id": "r", "prompt_id": "p" * 64, "sample_index": 1, "reference": "16", "verified": True,
    "finish_reason": "stop", "prompt_tokens": 9, "completion_tokens": 12,
}


def test_think_keeps_the_teachers_completion_and_restores_an_opener_the_template_added():
    assert assistant_turn(TRACE["completion"], "7+9=16", "16", "think")["content"] == TRACE["completion"]
    # the chat template opened <think> in the prompt: the completion starts inside the block
    assert assistant_turn("7+9=16\n</think>\n16", "7+9=16", "16", "think")["content"] == "<think>\n7+9=16\n</think>\n16"
    assert assistant_turn("16", None, "16", "think")["content"] == "16"
    assert assistant_turn(TRACE["completion"], "7+9=16", "16", "field") == {
        "role": "assistant", "content": "16", "reasoning_content": "7+9=16"}
    assert assistant_turn(TRACE["completion"], "7+9=16", "16", "drop") == {"role": "assistant", "content": "16"}


def test_trl_and_openai_hold_the_whole_conversation():
    row = ExportFormatter("trl", "think", metadata=False).row(TRACE)
    assert row == {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 7 + 9?"},
                                {"role": "assistant", "content": TRACE["completion"]}]}
    assert ExportFormatter("openai", "think", metadata=False).row(TRACE) == row


def test_prompt_completion_splits_at_the_reply_and_field_mode_types_every_message():
    fmt = ExportFormatter("prompt-completion", "field", metadata=True)
    table = fmt.to_table([TRACE])
    row = table.to_pylist()[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert all(m["reasoning_content"] is None for m in row["prompt"])
    assert row["completion"] == [{"role": "assistant", "content": "16", "reasoning_content": "7+9=16"}]
    assert row["verified"] is True and row["completion_tokens"] == 12
    assert table.schema == fmt.schema


def test_sharegpt_uses_from_value_and_has_no_reasoning_field():
    row = ExportFormatter("sharegpt", "drop", metadata=False).row(TRACE)
    assert row == {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "What is 7 + 9?"},
                                     {"from": "gpt", "value": "16"}]}
    with pytest.raises(ValueError, match="sharegpt has no reasoning field"):
        ExportFormatter("sharegpt", "field")
    with pytest.raises(ValueError, match="sharegpt has no reasoning field.*use reasoning think"):
        ExportConfig(runs=["r"], out="o", format="sharegpt", reasoning="field")


def test_jsonl_lines_are_one_object_each_and_keep_unicode():
    fmt = ExportFormatter("openai", "think", metadata=False)
    text = fmt.to_jsonl([TRACE, {**TRACE, "messages": [{"role": "user", "content": "Ünïcode ✓"}]}]).decode()
    lines = text.splitlines()
    assert len(lines) == 2 and "✓" in lines[1]
    assert json.loads(lines[0]) == fmt.row(TRACE)


def test_config_defaults_per_format():
    assert ExportConfig(runs=["r"], out="o", format="openai").resolved_file_format() == "jsonl"
    assert not ExportConfig(runs=["r"], out="o", format="openai").resolved_metadata()
    assert ExportConfig(runs=["r"], out="o", format="trl").resolved_file_format() == "parquet"
    assert ExportConfig(runs=["r"], out="o", format="trl", file_format="jsonl").resolved_file_format() == "jsonl"
