"""Every recipe config loads; `potstill plan` plans the s1 recipe inside an 80 GB H100 and within 2x of its published
26 minutes at the MFU it states, refuses the 70B student on 8 GPUs naming what to change, and reads the data size
of a finished run from its manifest.

    .venv/bin/pytest tests/unit/cli/test_plan.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from potstill.cli import app
from potstill.schemas import GenerationConfig, load_config
from potstill.schemas.training import TrainingConfig

REPO = Path(__file__).resolve().parents[3]
RECIPES = REPO / "examples" / "recipes"
"""Configs of the `openai` teacher engine (the API teacher issue): until its schema (`teacher.api`) is merged they
are refused on the teacher's keys only; from then on they load like every other config."""


@pytest.fixture
def unreachable_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipes' s3://YOUR-BUCKET is nowhere: answer "not readable" at once instead of waiting on the network."""
    from potstill.pipelines.planning import inputs

    def unreadable(*args, **kwargs):
        raise FileNotFoundError("s3://YOUR-BUCKET is a placeholder")

    monkeypatch.setattr(inputs, "_read_config", lambda folder, storage: None)
    monkeypatch.setattr(inputs, "_read_manifest", unreadable)


def _recipes() -> list[str]:
    return sorted(str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.yaml"))


def test_there_are_the_two_recipes_each_a_generation_and_training_pair_with_a_readme() -> None:
    assert set(_recipes()) == {"s1/generate.yaml", "s1/train.yaml", "r1-distill/generate.yaml",
                               "r1-distill/train-1.5b.yaml", "r1-distill/train-7b.yaml", "r1-distill/train-70b.yaml"}
    assert (RECIPES / "s1" / "README.md").is_file() and (RECIPES / "r1-distill" / "README.md").is_file()


@pytest.mark.parametrize("name", _recipes())
def test_every_recipe_config_loads(name: str) -> None:
    model = GenerationConfig if "generate" in name else TrainingConfig
    load_config(RECIPES / name, model)


def test_plan_of_the_s1_recipe_fits_an_h100_and_takes_about_26_minutes(unreachable_store) -> None:
    out = CliRunner().invoke(app, ["plan", str(RECIPES / "s1" / "train.yaml"), "--json"])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.stdout)
    assert plan["fits"] and plan["gpu"] == "H100-80GB" and plan["gpus"] == 16
    assert plan["memory_gib_per_gpu"]["total"] <= plan["gpu_memory_gib"] <= 80
    assert 13 <= plan["minutes"] <= 52 and plan["mfu"] == 0.25  # the published 26 minutes, within 2x
    human = CliRunner().invoke(app, ["plan", str(RECIPES / "s1" / "train.yaml")])
    assert human.exit_code == 0 and "at MFU 25%" in human.output and "16 x H100-80GB" in human.output


def test_plan_of_the_70b_student_on_8_gpus_is_refused_naming_what_to_change(unreachable_store) -> None:
    out = CliRunner().invoke(app, ["plan", str(RECIPES / "r1-distill" / "train-70b.yaml"), "--workers", "8"])
    assert out.exit_code == 2
    text = " ".join(out.output.split())
    assert "does not fit" in text and "scaling.num_workers: 29 or more" in text and "strategy.cpu_offload: true" in text
    ok = CliRunner().invoke(app, ["plan", str(RECIPES / "r1-distill" / "train-70b.yaml"), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["fits"]


def test_plan_of_the_generation_recipe_states_replicas_kv_cache_and_rate(unreachable_store) -> None:
    out = CliRunner().invoke(app, ["plan", str(RECIPES / "r1-distill" / "generate.yaml"), "--gpus", "16",
                                   "--tokens-per-s-per-gpu", "800", "--prompts", "1000", "--json"])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.stdout)
    assert plan["replicas"] == 2 and plan["gpus_per_replica"] == 8 and plan["tokens_per_s"] == 12800
    assert plan["kv_cache_tokens"] > 32768 and plan["samples"] == [2000, 16000]
    refused = CliRunner().invoke(app, ["plan", str(RECIPES / "r1-distill" / "generate.yaml"), "--gpu", "H100-80GB"])
    assert refused.exit_code == 2 and "teacher.tensor_parallel_size: 16" in " ".join(refused.output.split())


def test_plan_reads_the_data_size_of_a_finished_run_and_refuses_without_it(tmp_path: Path) -> None:
    from potstill.pipelines.output.commit import commit_shard, finalize_run
    from potstill.pipelines.output.shard_writer import write_shard
    from potstill.pipelines.output.storage import Storage
    from potstill.pipelines.planning.inputs import training_data
    from tests.unit.output.test_commit import RUN, stats_for, trace_rows

    store = Storage(str(tmp_path / "run"))
    rows = trace_rows("000000-a", n=6)
    written = write_shard(store, RUN, "000000-a", rows)
    commit_shard(store, written, RUN, "000000-a", sorted({r["prompt_id"] for r in rows}), [],
                 stats_for(rows).model_copy(update={"prompt_tokens": 21, "completion_tokens": 18}))
    finalize_run(store, RUN, "fp", "tiny", "abc", ["000000-a"])
    cfg = TrainingConfig.model_validate({"name": "t", "data": {"runs": [store.uri]}})
    data = training_data(cfg)
    assert (data.traces, data.mean_trace_tokens, data.source) == (6, 21 / 3 + 18 / 6, "manifests of data.runs")
    missing = TrainingConfig.model_validate({"name": "t", "data": {"runs": [str(tmp_path / "nothing")]}})
    with pytest.raises(ValueError, match="set plan.traces and plan.mean_trace_tokens"):
        training_data(missing)
