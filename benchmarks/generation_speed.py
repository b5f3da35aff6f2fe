"""Generation benchmarks: the full pipeline against plain vLLM, the writer against pyarrow,
driver memory at 10x the prompts. Prints one JSON object of same-run ratios.

    .venv/bin/python benchmarks/generation_speed.py [--prompts 4096] [--rss-prompts 2000] [--rounds 3]

Every ratio compares A and B measured in this run on this machine, on the
same prompts and engine settings; engine start-up is excluded from both.
The default 4096 prompts keep each timed run to tens of seconds: at 512 it
lasts about two, so the ratio would mostly measure the pipeline's fixed
latencies (first dispatch, the last shard's write and commit), not its
throughput.

The pipeline and plain vLLM alternate (`--rounds` pipeline rounds, one more
of plain vLLM: before Ray starts, beside the idle Ray cluster between
pipeline rounds, after Ray stops) and the ratios divide medians: on a
shared machine two plain runs of one process differ by more than the gaps
judged (docs/PERFORMANCE.md).
`tokens_per_s_rounds` lists every round.

Plain vLLM runs in two configurations each round (`bare_vllm`): as `LLM(...)`
sets itself up by default (`pipeline_vs_bare_vllm_*`), and with the executor
the pipeline's CPU engines use, which for the `LLM` class leaves no process
boundary at all (`pipeline_vs_bare_vllm_in_process_*`). On a GPU both are the
same engine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_model import build_random_llama  # noqa: E402
from potstill.cli.common import last_json_line  # noqa: E402

TEMPERATURE = 0.6
BARE_MODES = ("default", "in_process")


def make_prompts(n: int, skewed: bool, seed: int) -> list[dict]:
    """90% ask <= 16 tokens and 10% ask 512 (skewed), or all ask the same mean budget (uniform)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        budget = (512 if rng.random() < 0.1 else rng.randint(1, 16)) if skewed else 64
        question = f"What is {rng.randint(100, 999)} + {rng.randint(100, 999)}? #{i}"
        rows.append({"prompt": question, "max_tokens": budget})
    return rows


def bare_vllm(model: Path, runs: dict[str, tuple[list[dict], int | None]], in_process: bool) -> dict[str, float]:
    """Output tokens/s of plain `LLM.generate` per run: all prompts at once, or chunks of `chunk` in turn.

    `in_process=False`: `LLM(...)` as vLLM configures it by default (on CPU: an engine-core process and a model
    worker process). `in_process=True`: the executor the pipeline's CPU engines use (`model_in_engine_core`, no
    worker process); for the `LLM` class that also drops the engine-core process, so plain vLLM runs with no
    process boundary at all, which the pipeline's async engine always has."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform

    from potstill.pipelines.engines.cpu_executor import model_in_engine_core

    tok = AutoTokenizer.from_pretrained(model)
    args = {"model": str(model), "dtype": "float32", "seed": 0, "max_model_len": 1024, "disable_log_stats": True}
    with model_in_engine_core(args, on_cpu=in_process and current_platform.is_cpu()):
        llm = LLM(**args)
    results = {}
    for name, (rows, chunk) in runs.items():
        ids = [tok.encode(tok.apply_chat_template([{"role": "user", "content": r["prompt"]}],
                                                  add_generation_prompt=True, tokenize=False),
                          add_special_tokens=False) for r in rows]
        params = [SamplingParams(temperature=TEMPERATURE, max_tokens=r["max_tokens"], ignore_eos=True) for r in rows]
        llm.generate([{"prompt_token_ids": ids[0]}], params[0], use_tqdm=False)  # warm-up
        start = time.perf_counter()
        tokens = 0
        step = chunk or len(rows)
        for i in range(0, len(rows), step):
            outs = llm.generate([{"prompt_token_ids": x} for x in ids[i:i + step]], params[i:i + step], use_tqdm=False)
            tokens += sum(len(o.outputs[0].token_ids) for o in outs)
        results[name] = tokens / (time.perf_counter() - start)
    del llm
    gc.collect()
    return results


def pipeline(model: Path, rows: list[dict], work: Path, name: str) -> float:
    """Output tokens/s of `potstill generate` (1 replica, writing and committing included)."""
    from potstill.pipelines.jobs.run_generation import run_generation
    from potstill.schemas import GenerationConfig

    src = work / f"{name}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = GenerationConfig.model_validate({
        "run_id": name,
        "prompts": {"path": str(src), "fields": {"prompt": "prompt", "max_tokens": "max_tokens"}},
        "teacher": {"model": str(model), "dtype": "float32", "max_model_len": 1024},
        "sampling": {"n": 1, "temperature": TEMPERATURE, "max_tokens": 512, "ignore_eos": True},
        "verify": {"method": "none", "require_stop": False},
        "output": {"uri": str(work / name), "prompts_per_shard": 128},
    })
    summary = run_generation(cfg)
    assert summary.totals.prompts == len(rows), summary
    return summary.totals.completion_tokens / summary.generation_s


def writer_vs_pyarrow(work: Path, rows: int = 20_000) -> float:
    """Shard writer MB/s (write + verify, local) / raw `pq.write_table` MB/s on the same table."""
    import pyarrow.parquet as pq

    from potstill.pipelines.output.shard_writer import records_to_table, write_shard
    from potstill.pipelines.output.storage import Storage
    from potstill.schemas import StorageConfig

    rng = random.Random(0)
    base = {"run_id": "bench", "shard_id": "shard", "attempt": 0, "reference": "1", "reasoning": "r" * 80,
            "answer": "123", "finish_reason": "stop", "prompt_tokens": 30, "verifier": "math",
            "teacher_model": "m", "teacher_revision": "x", "sampling": "{}", "schema_version": 1}
    records = []
    for i in range(rows):
        n = rng.randint(40, 120)
        records.append({**base, "prompt_id": f"{i:064x}", "sample_index": i % 4,
                        "messages": [{"role": "user", "content": f"What is {i} + {i}?"}],
                        "completion": "x" * n, "completion_tokens": n,
                        "completion_token_ids": [rng.randrange(128) for _ in range(n)],
                        "topk_ids": [[rng.randrange(128) for _ in range(4)] for _ in range(n)],
                        "topk_logprobs": [[-rng.random() for _ in range(4)] for _ in range(n)],
                        "verified": True, "created_at": __import__("datetime").datetime.now()})
    table = records_to_table(records)
    storage = Storage(str(work / "writer"), StorageConfig())
    timings = {"raw": [], "writer": []}
    for rep in range(3):
        start = time.perf_counter()
        pq.write_table(table, work / f"raw{rep}.parquet", compression="zstd", compression_level=3)
        timings["raw"].append(time.perf_counter() - start)
        start = time.perf_counter()
        write_shard(storage, "bench", "shard", table, "zstd", 3)
        timings["writer"].append(time.perf_counter() - start)
    # Same bytes on both sides, so the MB/s ratio is the inverse time ratio.
    return min(timings["raw"]) / min(timings["writer"])


def driver_rss(model: Path, work: Path, prompts: int) -> tuple[float, float]:
    """Peak RSS (MiB) of the driver and of the controller for a run of `prompts` 1-token prompts."""
    rows = [{"prompt": f"p{i}", "max_tokens": 1} for i in range(prompts)]
    src = work / f"rss{prompts}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = work / f"rss{prompts}.yaml"
    config.write_text(json.dumps({
        "prompts": {"path": str(src), "fields": {"prompt": "prompt", "max_tokens": "max_tokens"}},
        "teacher": {"model": str(model), "dtype": "float32", "max_model_len": 1024},
        "sampling": {"n": 1, "max_tokens": 1}, "verify": {"method": "none", "require_stop": False},
        "output": {"prompts_per_shard": 500}}))
    out = subprocess.run([sys.executable, "-m", "potstill.cli", "generate", str(config), "--out",
                          str(work / f"rss{prompts}"), "--json"], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    summary = last_json_line(out.stdout)
    return summary["driver_peak_rss_mb"], summary["controller_peak_rss_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4096)
    parser.add_argument("--rss-prompts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="Pipeline rounds; plain vLLM runs one more.")
    args = parser.parse_args()
    import ray

    from potstill.cluster.connect import ensure_ray

    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_random_llama(work / "model")
        prompts = {"skewed": make_prompts(args.prompts, True, 0), "uniform": make_prompts(args.prompts, False, 1)}
        both = {name: (rows, None) for name, rows in prompts.items()}
        bare: dict[str, dict[str, list[float]]] = {mode: {"skewed": [], "uniform": []} for mode in BARE_MODES}
        pipe: dict[str, list[float]] = {"skewed": [], "uniform": []}

        def bare_round(runs, first: bool = False) -> None:
            for mode in BARE_MODES:
                chunked = {"chunked": (prompts["skewed"], 64)} if first and mode == "default" else {}
                for name, tokens_per_s in bare_vllm(model, runs | chunked, in_process=mode == "in_process").items():
                    bare[mode].setdefault(name, []).append(tokens_per_s)

        # Alternate plain vLLM and the pipeline, so a slow spell of this shared machine hits both alike:
        # plain before Ray starts, beside the idle Ray cluster between pipeline rounds, and after Ray stops.
        bare_round(both, first=True)
        ensure_ray()
        for i in range(args.rounds):
            if i:
                bare_round(both)
            for name, rows in prompts.items():
                pipe[name].append(pipeline(model, rows, work, f"{name}-{i}"))
        ray.shutdown()
        bare_round(both)
        for name in prompts:
            piped = statistics.median(pipe[name])
            result[f"pipeline_vs_bare_vllm_{name}"] = piped / statistics.median(bare["default"][name])
            result[f"pipeline_vs_bare_vllm_in_process_{name}"] = piped / statistics.median(bare["in_process"][name])
        result["pipeline_vs_chunked_vllm_skewed"] = statistics.median(pipe["skewed"]) / bare["default"]["chunked"][0]
        result["writer_vs_pyarrow"] = writer_vs_pyarrow(work)
        d1, c1 = driver_rss(model, work, args.rss_prompts)
        d10, c10 = driver_rss(model, work, 10 * args.rss_prompts)
        result["driver_rss_10x_over_1x"] = d10 / d1
        result["controller_rss_10x_over_1x"] = c10 / c1
        result["tokens_per_s_rounds"] = {"pipeline": pipe, "bare": bare}
        result["peak_rss_mb"] = {"driver_1x": d1, "driver_10x": d10, "controller_1x": c1, "controller_10x": c10}
        result["prompts"] = args.prompts
    print(json.dumps(result, indent=None))


if __name__ == "__main__":
    main()
