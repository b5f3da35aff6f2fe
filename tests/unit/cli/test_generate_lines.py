"""What `potstill generate` prints: the cost headline of a run and the dry-run estimate."""

from __future__ import annotations

from potstill.cli.generate import cost_lines, estimate_lines
from potstill.pipelines.generate.cost import CostLedger, Prices
from potstill.schemas.generation import GenerationConfig
from potstill.pipelines.generate.estimate import estimate_run
from potstill.schemas.manifest import ShardStats


def _cost(status: str) -> dict:
    ledger = CostLedger(Prices(usd_per_gpu_hour=2.0))
    ledger.replica_added("replica-1", 1, 4, 0)
    ledger.replica_ready("replica-1", 60)
    ledger.credit("replica-1", ShardStats(samples_drawn=10, completion_tokens=1000, accepted_samples=8, accepted_tokens=800,
                                          resampled_samples=2, resampled_accepted=1, resampled_completion_tokens=200))
    report = ledger.report(3600, generation_s=3540, elapsed_s=3600, prompts_done=5).model_dump()
    run = {k: v for k, v in report.items() if k != "replicas"}
    return {"status": status, "budget_usd": 2.0, "spent_usd": 2.0, "this_invocation": run, "run": run,
            "replicas": report["replicas"]}


def test_the_cost_headline_names_dollars_per_trace_the_split_and_the_budget_stop():
    text = "\n".join(cost_lines(_cost("complete")))
    assert "cost: $2.0000" in text and "$0.2500 per accepted trace" in text and "1.000 GPU-hours" in text
    assert "rejection sampling $0.4000 for 1 more traces ($0.4000 each" in text
    assert "per replica: replica-1 0" in text  # 1000 tokens over 3540 s of work
    assert "stopped at the budget" not in text
    stopped = "\n".join(cost_lines(_cost("budget_exhausted")))
    assert "stopped at the budget: $2.0000 spent of budget.max_usd $2.0000" in stopped and "resume" in stopped
    assert cost_lines(None) == []


def test_the_estimate_reads_as_prompts_tokens_time_and_dollars():
    cfg = GenerationConfig.model_validate({"prompts": {"arithmetic": {}}, "budget": {"max_usd": 1},
                                           "teacher": {"engine": "openai", "model": "m", "api": {
                                               "base_url": "http://h/v1", "requests_per_minute": 60,
                                               "price": {"output_usd_per_million": 10}}}})
    e = estimate_run(cfg, run_id="r", prompts=600, shards=3, invalid=2, duplicates=1, sample=None, output_tokens=100)
    text = "\n".join(estimate_lines(e.model_dump(mode="json")))
    assert "prompts 600 valid (2 invalid, 1 duplicates) in 3 shards" in text
    assert "estimated output 60,000 tokens" in text and "time 10.0 min (bound: requests_per_minute)" in text
    assert "estimated cost $0.6000" in text and "budget $1.0000: fits" in text


def test_a_dry_run_writes_nothing_and_keeps_its_log_out_of_the_output(tmp_path):
    import os
    import re
    import subprocess
    import sys

    import yaml

    out = tmp_path / "never-written"
    config = tmp_path / "gen.yaml"
    config.write_text(yaml.safe_dump({
        "run_id": "dry", "prompts": {"arithmetic": {"count": 40}}, "output": {"uri": str(out), "prompts_per_shard": 10},
        "teacher": {"engine": "openai", "model": "m", "api": {"base_url": "http://127.0.0.1:9/v1",
                                                              "requests_per_minute": 60,
                                                              "price": {"output_usd_per_million": 10}}}}))
    env = {k: v for k, v in os.environ.items() if k != "POTSTILL_LOG_LEVEL"} | {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "potstill.cli", "generate", str(config), "--dry-run", "--sample", "0",
                           "--output-tokens", "100"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    terminal = proc.stdout + proc.stderr
    assert "dry run of dry: nothing was written" in terminal and "prompts 40 valid" in terminal
    log = re.search(r"log: (\S+\.log)", terminal).group(1)
    assert log.startswith(str(tmp_path / "cache" / "potstill" / "logs")) and os.path.isfile(log)
    assert not out.exists()
