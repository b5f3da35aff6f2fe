"""Score a model on held-out prompts: generate in vLLM (greedy), check with the run's verifiers.

    potstill eval runs/train/arithmetic-student/student arithmetic:200
    potstill eval MODEL prompts.jsonl --prompt-field question --reference-field answer --method math

`load_eval_prompts` reads the prompts exactly as a generation run would (the
same ingestion: JSONL or Parquet, local or s3://, validated rows, duplicates
collapsed) or makes `arithmetic:N` fresh held-out additions (3 digits, the
pairs the shipped teacher never trained on). `evaluate` decodes them with the
model's chat template in one vLLM engine and checks every completion with
`potstill.verify` (the text after `</think>` against the reference).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from potstill.schemas.generation import StorageConfig

ARITHMETIC_SPEC = re.compile(r"^arithmetic:(\d+)$")
EVAL_SEED = 7
"""Seed of `arithmetic:N` problems (generation runs use other seeds; `exclude` drops any overlap)."""
CPU_KV_CACHE_BYTES = 2**30
"""KV cache for eval engines on CPU: plenty for small models at eval batch sizes."""


def small_model_cache_args() -> dict[str, int]:
    """vLLM engine arguments sizing a small model's KV cache: on CPU vLLM would otherwise claim 90% of the
    machine's memory; on GPU its own sizing stands."""
    import torch

    return {} if torch.cuda.is_available() else {"kv_cache_memory_bytes": CPU_KV_CACHE_BYTES}


@dataclass(frozen=True)
class EvalPrompt:
    """One held-out prompt: the conversation and its reference answer."""

    messages: list[dict[str, str]]
    reference: str


def load_eval_prompts(
    spec: str, prompt_field: str = "prompt", reference_field: str = "answer", storage: StorageConfig | None = None,
    seed: int = EVAL_SEED, digits: int = 3, exclude: set[str] | frozenset[str] = frozenset(),
) -> list[EvalPrompt]:
    """Prompts of `spec` (`arithmetic:N` or a JSONL/Parquet file) with references; `exclude` drops prompts
    whose last user message is in it (e.g. the questions the student was trained on)."""
    from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts
    from potstill.schemas.generation import ArithmeticPromptsConfig, FieldMapping, PromptsConfig

    match = ARITHMETIC_SPEC.match(spec)
    if match:
        count = int(match.group(1))
        if count < 1:
            raise ValueError(f"PROMPTS={spec!r} asks for 0 problems; use arithmetic:N with N >= 1")
        # Draw extra so that dropping excluded questions still leaves `count`.
        cfg = PromptsConfig(arithmetic=ArithmeticPromptsConfig(count=count + len(exclude), digits=digits, seed=seed))
    elif spec.startswith("arithmetic"):
        raise ValueError(f"PROMPTS={spec!r} is not arithmetic:N; write e.g. arithmetic:200")
    else:
        count = None
        cfg = PromptsConfig(path=spec, fields=FieldMapping(prompt=prompt_field, reference=reference_field))
    report = IngestReport()
    prompts = []
    try:
        records = iter_prompts(cfg, storage, report)
    except ValueError as exc:  # name the command-line options, not the generation config keys
        text = str(exc).replace("prompts.fields.reference", "--reference-field").replace("prompts.fields.prompt", "--prompt-field")
        raise ValueError(text) from None
    for record in records:
        messages = [m.model_dump() for m in record.messages]
        if messages[-1]["content"] in exclude:
            continue
        prompts.append(EvalPrompt(messages, record.reference))
        if count is not None and len(prompts) == count:
            break
    if report.invalid:
        rows = "; ".join(f"row {e.row} [{e.field.replace('prompts.fields.', '')}]: {e.reason}"
                         for e in report.errors if e.kind != "duplicate")
        raise ValueError(f"{spec}: {report.invalid} of {report.rows_read} rows cannot be scored ({rows[:600]}); "
                         "fix or remove them (every eval prompt needs a prompt and a reference)")
    if not prompts:
        raise ValueError(f"{spec}: no prompts; check the file and the field names")
    return prompts


def evaluate(
    model: str, prompts: list[EvalPrompt], method: str = "math", max_tokens: int = 256, dtype: str = "auto",
) -> dict[str, Any]:
    """Greedy-decode `prompts` with `model` in vLLM and verify every answer; returns accuracy and a sample."""
    from potstill import verify
    from potstill.pipelines.models.assets import resolve_model

    import torch
    from vllm import LLM, SamplingParams

    path = resolve_model(model)
    if dtype == "auto" and not torch.cuda.is_available():
        dtype = "float32"
    started = time.perf_counter()
    llm = LLM(model=path, dtype=dtype, seed=0, enforce_eager=True, disable_log_stats=True, **small_model_cache_args())
    try:
        limit = llm.llm_engine.model_config.max_model_len
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        gen_started = time.perf_counter()
        outputs = llm.chat([p.messages for p in prompts], params, use_tqdm=True)
        gen_s = time.perf_counter() - gen_started
    finally:
        del llm
    completions = [o.outputs[0].text for o in outputs]
    verdicts = [verify(c, p.reference, method=method) for c, p in zip(completions, prompts)]
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    correct = sum(verdicts)
    return {
        "model": model,
        "n": len(prompts),
        "correct": correct,
        "accuracy": correct / len(prompts),
        "method": method,
        "max_model_len": limit,
        "finished": sum(o.outputs[0].finish_reason == "stop" for o in outputs),
        "sample": {"prompt": prompts[0].messages[-1]["content"], "completion": completions[0],
                   "reference": prompts[0].reference, "correct": verdicts[0]},
        "output_tokens_per_s": round(tokens / gen_s, 1) if gen_s > 0 else None,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def count_parameters(model: str) -> int:
    """Parameters of a Hugging Face model folder (from its safetensors headers, no weights loaded)."""
    import json
    import struct
    from math import prod
    from pathlib import Path

    from potstill.pipelines.models.assets import resolve_model

    total = 0
    for file in sorted(Path(resolve_model(model)).glob("*.safetensors")):
        with open(file, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        total += sum(prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    if total == 0:
        raise ValueError(f"model {model!r}: no *.safetensors weights in {resolve_model(model)}; pass a Hugging Face model folder")
    return total
