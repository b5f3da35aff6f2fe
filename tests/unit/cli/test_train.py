"""The `potstill train` surfaces that need no Ray or vLLM: the clear refusals (unfinished run, follow without a
schedule length, bad config) and the summary lines.

    .venv/bin/pytest tests/unit/cli/test_train.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from potstill.cli import app
from potstill.pipelines.jobs.run_training import check_follow
from potstill.schemas.training import TrainingConfig

REPO = Path(__file__).resolve().parents[3]


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
