"""The GPU proof script runs: `bash benchmarks/gpu/run.sh --tiny` (the same code paths as on a GPU, tiny models on
the CPU build of vLLM and gloo) prints exactly one JSON object on stdout with every key the GPU run reports."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from potstill.pipelines.output.commit import committed_data_files

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
POSITIVE = ("bare_vllm_output_tok_s", "pipeline_output_tok_s", "pipeline_vs_bare_vllm_gpu", "roofline_fraction",
            "roofline_fraction_pipeline", "roofline_fraction_with_compute_ceiling", "roofline_tok_s",
            "student_tokens_per_s_per_gpu", "student_mfu", "student_step_s_median",
            "usd_per_million_teacher_output_tokens", "usd_per_million_teacher_output_tokens_bare_vllm", "wall_s")


def test_tiny_gpu_proof_prints_one_json_object_with_every_measurement(tmp_path):
    env = os.environ | {"POTSTILL_PYTHON": sys.executable, "RAY_ADDRESS": ""}
    done = subprocess.run(["bash", "benchmarks/gpu/run.sh", "--tiny", "--keep", str(tmp_path / "work")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must hold only the JSON object, got: {done.stdout[-2000:]}"
    result = json.loads(lines[0])

    for key in POSITIVE:
        assert isinstance(result[key], (int, float)) and math.isfinite(result[key]) and result[key] > 0, (key, result[key])
    assert result["mode"] == "tiny" and result["gpu_name"] == "cpu" and result["gpus"] == 0 and result["errors"] == {}
    # The ratio and the cost are what the two measured rates say.
    assert result["pipeline_vs_bare_vllm_gpu"] == pytest.approx(
        result["pipeline_output_tok_s"] / result["bare_vllm_output_tok_s"], rel=1e-2)
    assert result["usd_per_million_teacher_output_tokens"] == pytest.approx(
        2.0 / 3600 / result["pipeline_output_tok_s"] * 1e6, rel=1e-2)
    assert result["roofline_fraction"] == pytest.approx(result["bare_vllm_output_tok_s"] / result["roofline_tok_s"], rel=1e-2)
    # The CPU peaks are placeholders, and the JSON says so where the fractions are explained.
    for key in ("roofline_method", "student_mfu_method"):
        assert isinstance(result[key], str) and "nominal" in result[key], key
    assert "HBM" in result["roofline_method"] and "6 x" in result["student_mfu_method"]

    sizes = result["sizes"]
    tokens = result["teacher_output_tokens"]
    # ignore_eos: both sides generate every prompt's whole budget.
    assert tokens["equal"] and tokens["bare_vllm"] == tokens["pipeline"] == tokens["asked"] == sizes["output_budget"]["total"]
    assert sizes["teacher"]["weights"] == "random (vLLM dummy)" and sizes["student"]["workers"] == 1
    assert sizes["student"]["topk"] > 0 and 0 < result["student_packing_efficiency"] <= 1
    assert len(result["student_step_s"]) == sizes["student"]["warmup_steps"] + sizes["student"]["timed_steps"]
    assert math.isfinite(result["student_final_loss"])
    # The pipeline really wrote and committed its shards.
    files = committed_data_files(str(tmp_path / "work" / "run"))
    assert len(files) == sizes["shards"] >= 2
