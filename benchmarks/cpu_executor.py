"""A CPU teacher engine with its model in the engine-core process against vLLM's default worker process, in one
run. Prints one JSON object.

    .venv/bin/python benchmarks/cpu_executor.py [--prompts 512]

Each engine starts in a fresh interpreter (`VllmEngine`, the shipped teacher, enforce_eager, 1 GiB of KV cache):
- `in_core`: potstill's default on CPU (`pipelines/engines/cpu_executor.py`, vLLM's "uni" executor);
- `worker_process`: the same engine with `distributed_executor_backend: mp` in its engine arguments, which is
  what vLLM's CPU platform picks by itself.
Reported per mode: seconds from `VllmEngine.start` to a ready engine, and output tokens/s of `--prompts` prompts
x n=4 sampled at temperature 1.0, 64 tokens at most, all submitted at once. `start_s_saved` and
`tokens_per_s_ratio` (in_core / worker_process) are the same-run comparisons.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import asyncio, json, sys, time
    from potstill.pipelines.engines.vllm_engine import VllmEngine
    from potstill.schemas.generation import SamplingConfig, TeacherConfig

    async def main(mode, prompts):
        kwargs = {"enforce_eager": True, **({"distributed_executor_backend": "mp"} if mode == "worker_process" else {})}
        engine = VllmEngine(TeacherConfig(kv_cache_gib=1, max_model_len=256, engine_kwargs=kwargs),
                            SamplingConfig(n=4, temperature=1.0, max_tokens=64))
        started = time.perf_counter()
        await engine.start()
        start_s = time.perf_counter() - started
        chats = [[{"role": "user", "content": f"What is {100 + i % 900} + {999 - i % 877}?"}] for i in range(prompts)]
        ids = engine.encode_chats(chats)
        started = time.perf_counter()
        gens = await asyncio.gather(*(engine.generate(x, 4, f"r{i}") for i, x in enumerate(ids)))
        gen_s = time.perf_counter() - started
        tokens = sum(s.num_tokens for g in gens for s in g.samples)
        await engine.shutdown()
        print("RESULT " + json.dumps({"start_s": round(start_s, 1), "tokens_per_s": round(tokens / gen_s)}), flush=True)

    if __name__ == "__main__":
        asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


def measure(mode: str, prompts: int) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(prompts)], capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} engine failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=512)
    args = parser.parse_args()
    worker = measure("worker_process", args.prompts)
    in_core = measure("in_core", args.prompts)
    print(json.dumps({
        "start_s_in_core": in_core["start_s"], "start_s_worker_process": worker["start_s"],
        "start_s_saved": round(worker["start_s"] - in_core["start_s"], 1),
        "tokens_per_s_in_core": in_core["tokens_per_s"], "tokens_per_s_worker_process": worker["tokens_per_s"],
        "tokens_per_s_ratio": round(in_core["tokens_per_s"] / worker["tokens_per_s"], 2), "prompts": args.prompts,
    }))


if __name__ == "__main__":
    main()
