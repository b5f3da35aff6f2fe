"""`potstill status` / `potstill scale` / `generate --detach`: what they print and what they refuse (no cluster)."""

from __future__ import annotations

from typer.testing import CliRunner

from potstill.cli import app
from potstill.cli.generate import _summary_lines
from potstill.cli.status import status_lines
from potstill.schemas.manifest import ReplicaCountSample, ShardStats
from potstill.schemas.results import GenerationStatus, GenerationSummary, ReplicaInfo, ScaleBounds

runner = CliRunner()


def live_status() -> GenerationStatus:
    return GenerationStatus(
        run_id="r1", out="s3://b/r1", phase="generating", prompts_total=1000, prompts_done=400, shards_total=40,
        shards_done=16, backlog_prompts=600, backlog_tokens=300_000.0, tokens_per_prompt=500.0, tokens_per_s=2500.0,
        eta_s=120.0, bounds=ScaleBounds(min_replicas=1, max_replicas=4), target_replicas=3,
        scale_reason="backlog: 1,200 replica-seconds of work, 600 s per replica",
        replicas=[
            ReplicaInfo(name="replica-1", state="ready", node_id="a" * 40, units_in_flight=2, units_done=9,
                        tokens_per_s=1250.0),
            ReplicaInfo(name="replica-2", state="draining", node_id="b" * 40, units_in_flight=1,
                        draining_because="node bbbbbbbbbbbb drains (deadline in 25 s)"),
            ReplicaInfo(name="replica-3", state="pending",
                        waiting_for="1 bundle of {CPU: 8, GPU: 1} packed on one node: no node has them free now "
                                    "(NO_RESOURCES)"),
        ],
        replica_history=[ReplicaCountSample(t_s=0, target=1, ready=0, starting=1, pending=0, draining=0),
                         ReplicaCountSample(t_s=90, target=3, ready=2, starting=0, pending=1, draining=0)],
        totals=ShardStats(traces=1600, verified=1500))


def test_status_lines_show_replicas_pending_reasons_drains_backlog_and_eta():
    text = "\n".join(status_lines(live_status()))
    assert "prompts 400/1000" in text and "backlog 600 prompts · 500 tokens/prompt" in text and "ETA 120 s" in text
    assert "accepted traces 1500 of 1600" in text and "target 3 (autoscaling 1..4; backlog" in text
    assert "waits for 1 bundle of {CPU: 8, GPU: 1}" in text and "(NO_RESOURCES)" in text
    assert "draining: node bbbbbbbbbbbb drains (deadline in 25 s)" in text and "1,250 tok/s" in text
    assert "replicas over time: 0s: 0 ready/1, 90s: 2 ready/3" in text


def test_status_json_round_trips_the_typed_model():
    status = live_status()
    again = GenerationStatus.model_validate_json(status.model_dump_json())
    assert again == status and [r.name for r in again.pending] == ["replica-3"] and again.accepted_traces == 1500


def test_scale_needs_a_count_or_bounds_and_not_both():
    assert "pass --replicas N" in runner.invoke(app, ["scale", "r1"]).output
    out = runner.invoke(app, ["scale", "r1", "--replicas", "2", "--max", "4"]).output
    assert "not both" in out
    assert runner.invoke(app, ["scale", "r1", "--replicas", "0"]).exit_code != 0


def test_status_without_a_cluster_address_says_how_to_name_one(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("POTSTILL_STATE_DIR", str(tmp_path))
    result = runner.invoke(app, ["status", "nowhere"])
    assert result.exit_code == 1 and "Pass --address" in result.output and "RAY_ADDRESS" in result.output


def test_detach_without_a_lasting_cluster_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = tmp_path / "gen.yaml"
    config.write_text("prompts: {arithmetic: {count: 4}}\n")
    result = runner.invoke(app, ["generate", str(config), "--detach"])
    assert result.exit_code == 1 and "--detach needs a Ray cluster that outlives this command" in result.output


def test_the_generate_summary_names_the_pool():
    summary = GenerationSummary(run_id="r1", out="/o", shards=4, totals=ShardStats(prompts=8, traces=16, verified=12),
                                this_run=ShardStats(completion_tokens=1000), generation_s=10.0, peak_replicas=2,
                                replicas_drained=1, attached=True,
                                ingest={"rows_read": 8, "valid": 8, "invalid": 0, "duplicates": 0})
    text = "\n".join(_summary_lines(summary))
    assert "(attached to the live controller)" in text and "100 tokens/s" in text
    assert "replicas: peak 2 · drained 1 · preempted 0 · replaced 0" in text
