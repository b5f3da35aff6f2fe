"""The real vLLM CPU engine behind `VllmEngine`: longest-first scheduling, the model computed in the engine-core
process (no worker process of its own), its IPC sockets in potstill's folder, completions decoded once (vLLM's per-token detokenizer off) reading exactly as vLLM's own text, and a
memory claim that cannot fit refused with the field to change.

The engine runs in a fresh interpreter, so that its process tree is its own and no engine state stays behind in
this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import asyncio, json, os
    from potstill.pipelines.engines.vllm_engine import VllmEngine
    from potstill.pipelines.host.cpu_affinity import descendants, process_name
    from potstill.schemas.generation import SamplingConfig, TeacherConfig

    async def main():
        engine = VllmEngine(TeacherConfig(kv_cache_gib=0.5, max_model_len=512), SamplingConfig(temperature=0.0, max_tokens=64))
        await engine.start()
        ids = engine.encode_chats([[{"role": "user", "content": "What is 12 + 30?"}]] * 3)
        gens = await asyncio.gather(*(engine.generate(x, 1, f"r{i}", max_tokens=m) for i, (x, m) in enumerate(zip(ids, (8, 64, 32)))))
        workers = [p for p in descendants(os.getpid()) if process_name(p).startswith("VLLM::Worker")]
        from potstill.pipelines.engines.ipc_sockets import is_listening, potstill_ipc_folder
        ipc = os.environ["VLLM_RPC_BASE_PATH"]
        import stat
        listening = sum(is_listening(e.path) for e in os.scandir(ipc) if stat.S_ISSOCK(e.stat().st_mode))
        from vllm.inputs import tokens_input
        detokenized = engine._params_for(1, 64).clone()
        detokenized.detokenize = True
        async for final in engine._llm.generate(tokens_input(ids[1]), detokenized, "detokenized-by-vllm"):
            pass
        out = {"lengths": [len(g.samples[0].token_ids) for g in gens], "texts": [g.samples[0].text for g in gens],
               "workers": len(workers), "engine_processes": [process_name(p) for p in descendants(os.getpid())],
               "executor": engine._llm.vllm_config.parallel_config.distributed_executor_backend,
               "multiprocessing_env_after_start": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING"),
               "policy": engine._llm.vllm_config.scheduler_config.policy,
               "vllm_detokenizes": engine._params.detokenize, "vllm_text": final.outputs[0].text,
               "ipc_folder": ipc, "potstill_ipc_folder": str(potstill_ipc_folder()), "ipc_listening": listening}
        await engine.shutdown()
        print("RESULT " + json.dumps(out), flush=True)

    asyncio.run(main())
""")


def test_longest_first_every_budget_model_in_the_engine_core_and_text_as_vllm_decodes_it():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["policy"] == "priority"
    # Greedy: the same prompt gives the same text, cut at each request's own budget (or its end).
    short, long_, mid = result["texts"]
    assert long_.startswith(mid) and mid.startswith(short)
    assert result["lengths"][0] <= 8 and result["lengths"][2] <= 32
    assert not result["vllm_detokenizes"] and long_ and result["vllm_text"] == long_
    # vLLM's IPC sockets are bound in potstill's folder (swept of dead engines' files), not in the root of /tmp.
    assert result["ipc_folder"] == result["potstill_ipc_folder"] and result["ipc_listening"] >= 1
    # On CPU the model runs in the engine-core process: no worker process, and the variable that allows it was
    # set only while the engine's config was built.
    assert result["executor"] == "uni" and result["workers"] == 0, result
    assert any(name.startswith("VLLM::EngineCor") for name in result["engine_processes"]), result
    assert result["multiprocessing_env_after_start"] is None


def test_a_cpu_memory_claim_that_cannot_fit_is_refused_naming_the_field_before_vllm_starts():
    script = textwrap.dedent("""
        import asyncio
        from potstill.pipelines.engines.vllm_engine import VllmEngine
        from potstill.schemas.generation import SamplingConfig, TeacherConfig
        try:
            asyncio.run(VllmEngine(TeacherConfig(gpu_memory_utilization=1.0, max_model_len=256), SamplingConfig()).start())
        except ValueError as exc:
            print("REFUSED " + str(exc), flush=True)
    """)
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    refused = [line for line in proc.stdout.splitlines() if line.startswith("REFUSED ")]
    assert proc.returncode == 0 and refused, proc.stderr[-3000:]
    # All of a node's memory is never free: vLLM's worker would fail after loading, with its own flag names.
    assert "teacher.kv_cache_gib is not set" in refused[0] and "teacher.gpu_memory_utilization (1.0)" in refused[0]
    assert "EngineCore" not in proc.stderr  # refused before vLLM started its engine process
