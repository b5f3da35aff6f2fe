"""The one scoring path's parts that need no vLLM: which prompts are scored (files, `arithmetic:N`, limits, the
questions a student was trained on left out, `eval:` of a training config) and parameter counts.

    .venv/bin/pytest tests/unit/jobs/test_evaluate.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from potstill.pipelines.jobs.evaluate import (
    count_parameters, evaluate_student, load_eval_prompts, local_model, student_eval_prompts, trained_questions,
)
from potstill.schemas.training import TrainingConfig
from tests.unit.output.committed_runs import UNCOMMITTED, make_run, question


def test_eval_prompts_from_a_jsonl_file_with_field_names(tmp_path: Path) -> None:
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "sol": str(2 * i)}) + "\n" for i in range(5)))
    items = load_eval_prompts(str(src), prompt_field="question", reference_field="sol")
    assert [(p.messages[-1]["content"], p.reference) for p in items][:2] == [("What is 0 + 0?", "0"), ("What is 1 + 1?", "2")]
    with pytest.raises(ValueError, match="--reference-field: column 'answer' is not in"):
        load_eval_prompts(str(src), prompt_field="question")
    src.write_text(json.dumps({"question": "q1", "sol": "1"}) + "\n" + json.dumps({"question": "q2"}) + "\n")
    with pytest.raises(ValueError, match=r"1 of 2 rows cannot be scored \(row 1 .*fix or remove them"):
        load_eval_prompts(str(src), prompt_field="question", reference_field="sol")


def test_arithmetic_prompts_are_fresh_held_out_and_leave_out_trained_questions() -> None:
    from potstill.pipelines.arithmetic import problems as arithmetic

    items = load_eval_prompts("arithmetic:20")
    assert len(items) == 20 and len({p.messages[-1]["content"] for p in items}) == 20
    for p in items:
        a, b = (int(x) for x in p.messages[-1]["content"].removeprefix("What is ").rstrip("?").split(" + "))
        assert not arithmetic.is_training_pair(a, b) and p.reference == str(a + b)
    trained = {items[0].messages[-1]["content"], items[5].messages[-1]["content"]}
    kept = load_eval_prompts("arithmetic:20", exclude=trained)
    assert len(kept) == 20 and not trained & {p.messages[-1]["content"] for p in kept}
    with pytest.raises(ValueError, match="is not arithmetic:N"):
        load_eval_prompts("arithmetic:lots")


def test_parameter_count_reads_safetensors_headers() -> None:
    assert count_parameters("potstill:arithmetic-teacher") == 541_312


def test_limit_keeps_the_first_prompts_of_a_file_and_caps_arithmetic(tmp_path: Path) -> None:
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n" for i in range(10)))
    assert [p.reference for p in load_eval_prompts(str(src), limit=3)] == ["0", "1", "2"]
    assert len(load_eval_prompts("arithmetic:20", limit=5)) == 5


def test_trained_questions_are_the_committed_prompts_only(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r1", "r1", prompts=4, n=2)
    live = make_run(tmp_path / "r2", "r2", prompts=2, first_prompt=10, finalize=False)
    questions = trained_questions([run, live])
    # Rejected samples' prompts count too (they were asked); the killed attempt's rows never do.
    assert questions == {question(i) for i in (0, 1, 2, 3, 10, 11)}
    assert UNCOMMITTED not in " ".join(questions)


def test_a_training_configs_eval_leaves_out_what_the_student_saw(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r1", "r1", prompts=4, n=1)
    src = tmp_path / "held_out.jsonl"
    rows = [{"q": question(i), "a": str(i)} for i in range(2, 8)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainingConfig.model_validate({"name": "s", "data": {"runs": [run]},
                                         "eval": {"prompts": str(src), "prompt_field": "q", "reference_field": "a", "count": 3}})
    prompts = student_eval_prompts(cfg)
    # question(2) and question(3) were trained on; the first 3 of the rest are scored.
    assert [p.messages[-1]["content"] for p in prompts] == [question(i) for i in (4, 5, 6)]
    bad = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"reference_field": "answer"})})
    with pytest.raises(ValueError, match=r"eval.prompts: .*eval.reference_field: column 'answer' is not in"):
        student_eval_prompts(bad)


def test_without_eval_prompts_training_scores_nothing() -> None:
    cfg = TrainingConfig.model_validate({"name": "s", "data": {"runs": ["r"]}})
    assert cfg.eval.prompts is None and evaluate_student(cfg, "no/such/student") is None
    with pytest.raises(ValueError, match="eval.prompts is not set"):
        student_eval_prompts(cfg)


def test_a_local_model_is_scored_in_place(tmp_path: Path) -> None:
    with local_model("potstill:arithmetic-teacher") as path:
        assert Path(path, "config.json").is_file()
    with local_model(str(tmp_path)) as path:
        assert path == str(tmp_path)


def test_eval_engines_get_a_short_shutdown_grace_unless_the_user_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from potstill.pipelines.jobs.evaluate import SHUTDOWN_GRACE_ENV, _short_shutdown_grace

    monkeypatch.delenv(SHUTDOWN_GRACE_ENV, raising=False)
    with _short_shutdown_grace():
        assert os.environ[SHUTDOWN_GRACE_ENV] == "1"
    assert SHUTDOWN_GRACE_ENV not in os.environ
    monkeypatch.setenv(SHUTDOWN_GRACE_ENV, "9")
    with _short_shutdown_grace():
        assert os.environ[SHUTDOWN_GRACE_ENV] == "9"
    assert os.environ[SHUTDOWN_GRACE_ENV] == "9"
