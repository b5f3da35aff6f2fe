"""The GPU proof's teacher measurements: plain `vllm.LLM.generate` and the potstill pipeline on the same prompts.

    rows = skewed_prompts(n, short=(64, 384), long=(1024, 1792), long_share=0.15, seed=0)
    cfg = generation_config(rows_path, out_uri, teacher, sampling, prompts_per_shard)   # one config for both sides
    python -m benchmarks.gpu.teacher bare CONFIG.json OUT.json      # plain vLLM, in its own process
    summary = pipeline(cfg)                                         # `potstill generate`'s job path (Ray)

Both sides get the engine arguments `VllmEngine.engine_args()` derives from
the same `GenerationConfig` (dummy weights, dtype, scheduling policy, batch
and KV sizes) and the same prompts, tokenized by the same chat template. Plain
vLLM runs in a process of its own that exits before the pipeline's replica
starts, so the two engines never share the device. Engine start-up is left
out of both timings (plain vLLM: one warm-up request first; the pipeline
reports `generation_s`, first replica ready to last shard committed).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

WORDS = ("carry", "digit", "sum", "seven", "column", "check", "answer", "step", "prime", "ratio", "table", "value")


def skewed_prompts(n: int, short: tuple[int, int], long: tuple[int, int], long_share: float, seed: int,
                   words: tuple[int, int] = (12, 40)) -> list[dict[str, Any]]:
    """`n` prompts of varied length; `long_share` of them ask a long budget, the rest a short one."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        budget = rng.randint(*long) if rng.random() < long_share else rng.randint(*short)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words)))
        rows.append({"prompt": f"#{i} {text}?", "max_tokens": budget})
    return rows


def generation_config(prompts_path: Path, out_uri: str, teacher: dict[str, Any], sampling: dict[str, Any],
                      prompts_per_shard: int) -> Any:
    """The one `GenerationConfig` both sides are built from (no verification: random weights say nothing)."""
    from potstill.schemas import GenerationConfig

    return GenerationConfig.model_validate({
        "run_id": "gpu-proof",
        "prompts": {"path": str(prompts_path), "fields": {"prompt": "prompt", "max_tokens": "max_tokens"}},
        "teacher": teacher,
        "sampling": sampling,
        "verify": {"method": "none", "require_stop": False},
        "output": {"uri": out_uri, "prompts_per_shard": prompts_per_shard},
    })


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def bare_vllm(cfg: Any) -> dict[str, Any]:
    """Output tokens/s of one `LLM.generate` call holding every prompt (after a one-request warm-up)."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from potstill.pipelines.engines.vllm_engine import VllmEngine

    engine = VllmEngine(cfg.teacher, cfg.sampling)
    engine.load_tokenizer()
    rows = read_rows(Path(cfg.prompts.path))
    ids = engine.encode_chats([[{"role": "user", "content": r["prompt"]}] for r in rows])
    s = cfg.sampling
    params = [SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p,
                             max_tokens=r["max_tokens"], logprobs=s.logprobs or None, ignore_eos=s.ignore_eos)
              for r in rows]
    priority = [-p.max_tokens if cfg.teacher.schedule == "longest_first" else 0 for p in params]
    started = time.perf_counter()
    llm = LLM(**engine.engine_args())
    print(f"[gpu-proof] plain vLLM engine up in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    llm.generate([TokensPrompt(prompt_token_ids=ids[0])], params[0].clone(), use_tqdm=False)  # warm-up
    started = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params, priority=priority, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"output_tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds,
            "max_num_seqs": engine_batch_capacity(llm),
            "prompt_tokens": [len(x) for x in ids], "budgets": [r["max_tokens"] for r in rows]}


def engine_batch_capacity(llm: Any) -> int:
    """The engine's max_num_seqs as it resolved it (vLLM picks a default per device when the config leaves it unset)."""
    engine = getattr(llm, "llm_engine", None)
    config = getattr(engine, "vllm_config", None) or llm.llm_engine.get_vllm_config()
    return config.scheduler_config.max_num_seqs


def pipeline(cfg: Any) -> dict[str, Any]:
    """`potstill generate`'s job path (controller actor, 1 replica, Parquet shards written and committed)."""
    from potstill.pipelines.jobs.run_generation import run_generation

    last = [0.0]

    def progress(status: Any) -> None:
        if time.monotonic() - last[0] > 10:
            last[0] = time.monotonic()
            print(f"[gpu-proof] pipeline {status.phase}: {status.shards_done}/{status.shards_total} shards, "
                  f"{status.prompts_done}/{status.prompts_total} prompts", file=sys.stderr, flush=True)

    summary = run_generation(cfg, on_progress=progress)
    if summary.status != "complete":
        raise RuntimeError(f"the generation run ended {summary.status!r}, not complete")
    tokens = summary.totals.completion_tokens
    return {"output_tokens": tokens, "prompts": summary.totals.prompts, "seconds": summary.generation_s,
            "tok_s": tokens / summary.generation_s, "shards": summary.shards, "failed_prompts": summary.failed_prompts,
            "out": summary.out}


if __name__ == "__main__":
    # python -m benchmarks.gpu.teacher bare CONFIG.json OUT.json
    from potstill.schemas import GenerationConfig

    _, mode, config_path, out_path = sys.argv
    if mode != "bare":
        raise SystemExit(f"unknown mode {mode!r}; the only one is `bare`")
    result = bare_vllm(GenerationConfig.model_validate_json(Path(config_path).read_text()))
    Path(out_path).write_text(json.dumps(result))
