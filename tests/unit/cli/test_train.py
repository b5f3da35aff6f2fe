"""The train/eval command surfaces that need no Ray or vLLM: eval prompt loading, parameter counts, and the
clear refusals of `potstill train` (unfinished run, follow without a schedule length, bad config).

    .venv/bin/pytest tests/unit/test_distill_cli.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from potstill.cli import app
from potstill.pipelines.jobs.run_training import check_follow
from potstill.pipelines.jobs.evaluate import count_parameters, load_eval_prompts
from potstill.schemas.training import TrainingConfig

REPO = Path(__file__).resolve().parents[3]


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


def test_follow_without_a_schedule_length_is_refused() -> None:
    cfg = TrainingConfig.model_validate({"name": "f", "data": {"runs": ["x"], "follow": True}})
    with pytest.raises(ValueError, match="data.follow: true with optim.schedule: cosine needs run.max_steps"):
        check_follow(cfg)
    check_follow(cfg.model_copy(update={"run": cfg.run.model_copy(update={"max_steps": 10})}))


def test_train_refuses_an_unfinished_run_with_the_fix(tmp_path: Path) -> None:
    run = tmp_path / "live-run"
    (run / "commits").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    result = CliRunner().invoke(app, ["train", str(REPO / "examples" / "distill_arithmetic.yaml"), "--run", str(run),
                                      "--storage-path", str(tmp_path / "ckpt")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    for needed in (str(run), "is not a finished generation run", "manifest.json and _SUCCESS missing",
                   "Wait for the run", "re-run `potstill generate`", "data.follow: true"):
        assert needed in text, (needed, text)


def test_train_lists_every_config_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {runs: [r]}\nloss: {sft_weigth: 1}\nrun: {epochs: 0}\n")
    result = CliRunner().invoke(app, ["train", str(bad)])
    assert result.exit_code == 2
    assert "loss.sft_weigth: unknown key; did you mean 'sft_weight'?" in result.output
    assert "run.epochs" in result.output
