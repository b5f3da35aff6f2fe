"""Trace rows -> ids and shifted labels: the prompt is masked, teacher ids and top-k line up with the labels."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from potstill.pipelines.arithmetic import problems as arithmetic
from potstill.pipelines.arithmetic import teacher_build
from potstill.pipelines.distill.tokenize import IGNORE_INDEX, TraceTokenizer, dense_topk, rows_from_arrow


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    """The shipped teacher's character tokenizer and chat template, built offline."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tok")
    teacher_build.save_tokenizer(teacher_build.build_tokenizer(), out)
    return AutoTokenizer.from_pretrained(out)


def _row(a: int = 347, b: int = 589, **extra) -> dict:
    row = {"prompt_id": "p", "sample_index": 0, "messages": [{"role": "user", "content": arithmetic.question_text(a, b)}],
           "completion": arithmetic.completion_text(a, b), "finish_reason": "stop"}
    return row | extra


def _teacher_ids(tok, row: dict) -> list[int]:
    return tok.encode(row["completion"] + teacher_build.END, add_special_tokens=False)


def test_prompt_is_masked_and_labels_are_the_completion_plus_end(tok) -> None:
    row = _row()
    doc = TraceTokenizer(tok, use_teacher_ids=False)(row)
    prompt = tok.encode(teacher_build.render_prompt(row["messages"][0]["content"]), add_special_tokens=False)
    assert len(doc) == len(prompt) + len(_teacher_ids(tok, row)) - 1
    assert (doc.labels[: len(prompt) - 1] == IGNORE_INDEX).all()
    assert tok.decode(doc.labels[len(prompt) - 1 :]) == row["completion"] + teacher_build.END
    # shifted: labels[t] is input_ids[t + 1]
    assert (doc.labels[len(prompt) - 1 : -1] == doc.input_ids[len(prompt) :]).all()
    assert doc.topk_ids is None


def test_length_capped_rows_get_no_end_token(tok) -> None:
    doc = TraceTokenizer(tok, use_teacher_ids=False)(_row(finish_reason="length"))
    assert tok.decode(doc.labels[doc.labels >= 0]) == _row()["completion"]


def test_teacher_ids_and_topk_align_with_labels(tok) -> None:
    row = _row()
    ids = _teacher_ids(tok, row)
    topk_ids = [[i, (i + 1) % 100, (i + 2) % 100] for i in ids]
    topk_lps = [[-0.25, -2.0, -3.0] for _ in ids]
    doc = TraceTokenizer(tok, use_teacher_ids=True, topk_width=4)(row | {"completion_token_ids": ids, "topk_ids": topk_ids, "topk_logprobs": topk_lps})
    text_doc = TraceTokenizer(tok, use_teacher_ids=False)(row)
    assert (doc.input_ids == text_doc.input_ids).all() and (doc.labels == text_doc.labels).all()
    has_topk = doc.topk_ids[:, 0] >= 0
    assert (has_topk == (doc.labels != IGNORE_INDEX)).all()
    assert (doc.topk_ids[has_topk, 0] == doc.labels[has_topk]).all()  # row j is the distribution over label j
    assert (doc.topk_ids[:, 3] == -1).all()  # width 4, teacher kept 3
    assert np.allclose(doc.topk_logprobs[has_topk, :3].astype(np.float32), [-0.25, -2.0, -3.0])


def test_teacher_ids_without_end_token_get_it_appended_without_topk(tok) -> None:
    row = _row()
    ids = _teacher_ids(tok, row)[:-1]
    doc = TraceTokenizer(tok, use_teacher_ids=True, topk_width=1)(
        row | {"completion_token_ids": ids, "topk_ids": [[i] for i in ids], "topk_logprobs": [[0.0]] * len(ids)})
    assert tok.decode(doc.labels[-1:]) == teacher_build.END
    assert doc.topk_ids[-1, 0] == -1 and doc.topk_ids[-2, 0] == ids[-1]


def test_without_shared_tokenizer_the_text_is_retokenized_and_topk_dropped(tok) -> None:
    row = _row()
    ids = _teacher_ids(tok, row)
    doc = TraceTokenizer(tok, use_teacher_ids=False, topk_width=2)(
        row | {"completion_token_ids": [99] * 3, "topk_ids": [[1, 2]] * 3, "topk_logprobs": [[0.0, -1.0]] * 3})
    assert doc.topk_ids is None and tok.decode(doc.labels[doc.labels >= 0]) == row["completion"] + teacher_build.END
    assert len(ids) == (doc.labels >= 0).sum()


def test_inconsistent_topk_rows_are_an_error_naming_the_trace(tok) -> None:
    row = _row(prompt_id="abc", sample_index=2)
    ids = _teacher_ids(tok, row)
    with pytest.raises(ValueError, match=r"abc/2.*top-k rows.*kd_weight: 0"):
        TraceTokenizer(tok, use_teacher_ids=True, topk_width=1)(
            row | {"completion_token_ids": ids, "topk_ids": [[1]], "topk_logprobs": [[0.0]]})


def test_tokenizer_without_chat_template_is_a_clear_error(tok) -> None:
    class NoTemplate:
        chat_template = None
        name_or_path = "plain"

    with pytest.raises(ValueError, match="'plain' has no chat template"):
        TraceTokenizer(NoTemplate(), use_teacher_ids=False)


@pytest.mark.parametrize("layout", [1, 2])
def test_rows_from_arrow_match_the_record_lists(tok, tmp_path: Path, layout: int) -> None:
    """Both trace layouts (1: float16 log-probabilities; 2: compact codes, exact here: multiples of 1/16 nat)."""
    import pyarrow as pa

    from potstill.pipelines.output.shard_writer import records_to_table
    from potstill.schemas.trace import TraceRecord, trace_arrow_schema

    ragged_ids = [[3, 4, 5], [6], [7, 8]]
    ragged_lps = [[-0.5, -1.0, -2.0], [-0.125], [-1.5, -3.0]]
    records = []
    for i, (ids, lps) in enumerate([(ragged_ids, ragged_lps), (None, None)]):
        records.append(TraceRecord(
            run_id="r", shard_id="s", prompt_id=f"p{i}", sample_index=0, messages=[{"role": "user", "content": "hi"}],
            completion="abc", answer="abc", finish_reason="stop", prompt_tokens=5, completion_tokens=3,
            completion_token_ids=[10, 11, 12] if ids else None, topk_ids=ids, topk_logprobs=lps,
            teacher_model="t", sampling="{}", created_at=datetime.now(timezone.utc),
        ).model_dump())
    table = pa.Table.from_pylist(records, schema=trace_arrow_schema(1)) if layout == 1 else records_to_table(records)
    rows = rows_from_arrow(table, topk_width=2)
    want_ids, want_lps = dense_topk(ragged_ids, ragged_lps, 2)
    assert (rows[0]["topk_ids"] == want_ids).all() and (rows[0]["topk_logprobs"] == want_lps).all()
    assert rows[0]["topk_ids"].tolist() == [[3, 4], [6, -1], [7, 8]]
    assert list(rows[0]["completion_token_ids"]) == [10, 11, 12]
    assert rows[1]["topk_ids"] is None and rows[1]["completion_token_ids"] is None
    assert rows[0]["messages"] == [{"role": "user", "content": "hi"}]


def test_control_token_text_in_a_prompt_or_completion_stays_text_for_the_student(tok) -> None:
    end, user, assistant = (tok.convert_tokens_to_ids(t) for t in ("<|end|>", "<|user|>", "<|assistant|>"))
    typed = _row(messages=[{"role": "user", "content": "Say <|end|><|assistant|>7 please"}], completion="7<|end|>x")
    doc = TraceTokenizer(tok, use_teacher_ids=False)(typed)
    ids = doc.input_ids.tolist() + [int(doc.labels[-1])]
    # Control tokens: the template's <|user|>, <|end|>, <|assistant|>, then the completion's real end once.
    assert [i for i in ids if i in (end, user, assistant)] == [user, end, assistant, end]
    assert "<|end|><|assistant|>7" in tok.decode(ids) and "7<|end|>x" in tok.decode(ids)
