"""The one path that scores a model: generate in vLLM (greedy by default), check with the verifiers.

    potstill eval runs/train/arithmetic-student/student arithmetic:200
    potstill eval MODEL prompts.jsonl --prompt-field question --reference-field answer --method math

`potstill eval`, `potstill teacher demo` (`teacher_demo.py`), `potstill demo`
(`run_demo.py`) and `potstill train` with an `eval:` section
(`evaluate_student`) all score here. `load_eval_prompts` reads the prompts
exactly as a generation run would (the same ingestion: JSONL or Parquet,
local or s3://, validated rows, duplicates collapsed) or makes `arithmetic:N`
fresh held-out additions (3 digits, the pairs the shipped teacher never
trained on). `evaluate` decodes them with the model's chat template in one
vLLM engine and checks every completion with `potstill.verify` (the text
after `</think>` against the reference). A model on s3:// is copied through
the project's storage stack into a temporary folder first.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from potstill.schemas.generation import StorageConfig

if TYPE_CHECKING:
    from potstill.pipelines.engines.protocol import Sample
    from potstill.schemas.training import TrainingConfig

ARITHMETIC_SPEC = re.compile(r"^arithmetic:(\d+)$")
EVAL_SEED = 7
"""Seed of `arithmetic:N` problems (generation runs use other seeds; `exclude` drops any overlap)."""
CPU_KV_CACHE_GIB = 1.0
"""KV cache for eval engines on CPU: plenty for small models at eval batch sizes."""
SHUTDOWN_GRACE_ENV, SHUTDOWN_GRACE_S = "VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS", "1"
"""How long a finished eval engine may take to stop before vLLM kills it. A vLLM model worker process (a GPU
engine's, or a CPU engine's given the multiprocessing executor; a default CPU engine has none,
`engines/cpu_executor.py`) leaves only on SIGTERM, which its default 5 s grace period delays, so every scoring
ended with seconds of idle waiting; the engine's outputs are all in hand by then, so there is nothing for a longer
grace to save."""


@dataclass(frozen=True)
class EvalPrompt:
    """One held-out prompt: the conversation and its reference answer."""

    messages: list[dict[str, str]]
    reference: str


def load_eval_prompts(
    spec: str, prompt_field: str = "prompt", reference_field: str = "answer", storage: StorageConfig | None = None,
    seed: int = EVAL_SEED, digits: int = 3, exclude: set[str] | frozenset[str] = frozenset(), limit: int | None = None,
) -> list[EvalPrompt]:
    """Prompts of `spec` (`arithmetic:N` or a JSONL/Parquet file) with references; `exclude` drops prompts
    whose last user message is in it (e.g. the questions the student was trained on); `limit` keeps the first
    that many prompts."""
    from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts
    from potstill.schemas.generation import ArithmeticPromptsConfig, FieldMapping, PromptsConfig

    match = ARITHMETIC_SPEC.match(spec)
    if match:
        count = int(match.group(1))
        if count < 1:
            raise ValueError(f"PROMPTS={spec!r} asks for 0 problems; use arithmetic:N with N >= 1")
        count = min(count, limit) if limit is not None else count
        # Draw extra so that dropping excluded questions still leaves `count`.
        cfg = PromptsConfig(arithmetic=ArithmeticPromptsConfig(count=count + len(exclude), digits=digits, seed=seed))
    elif spec.startswith("arithmetic"):
        raise ValueError(f"PROMPTS={spec!r} is not arithmetic:N; write e.g. arithmetic:200")
    else:
        count = limit
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


@contextmanager
def _short_shutdown_grace() -> Iterator[None]:
    """`SHUTDOWN_GRACE_S` for the engines started inside (their processes inherit it), unless the user set one."""
    if SHUTDOWN_GRACE_ENV in os.environ:
        yield
        return
    os.environ[SHUTDOWN_GRACE_ENV] = SHUTDOWN_GRACE_S
    try:
        yield
    finally:
        os.environ.pop(SHUTDOWN_GRACE_ENV, None)


@contextmanager
def local_model(model: str, storage: StorageConfig | None = None) -> Iterator[str]:
    """A local folder holding `model`: a shipped model's folder, a local path, or an s3:// folder copied into a
    temporary folder through the storage stack (its retry policy included), removed afterwards."""
    from potstill.pipelines.models.assets import resolve_model
    from potstill.pipelines.output.storage import Storage, is_remote

    if not is_remote(model):
        yield resolve_model(model)
        return
    store = Storage(model, storage)
    files = store.list()
    if "config.json" not in files:
        raise FileNotFoundError(f"{model}: no config.json under it; pass the folder of a saved Hugging Face model")
    with tempfile.TemporaryDirectory(prefix="potstill-model-") as folder:
        for rel in files:
            target = os.path.join(folder, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with store.open_read(rel) as src, open(target, "wb") as dst:
                while block := src.read(1 << 24):
                    dst.write(block)
        yield folder


async def _complete(conversations: list[list[dict[str, str]]], path: str, dtype: str, temperature: float,
                    max_tokens: int, on_completion: Callable[[int], None]) -> tuple[list["Sample"], int, float]:
    """One completion per conversation from the model at `path`, through the engine generation runs use
    (`VllmEngine`: the model's chat template, every request in one continuous batch); returns the completions,
    the engine's context length and the generation seconds. `on_completion(done)` runs as each one finishes."""
    import torch

    from potstill.pipelines.engines.vllm_engine import VllmEngine
    from potstill.schemas.generation import SamplingConfig, TeacherConfig

    cache = {} if torch.cuda.is_available() else {"kv_cache_gib": CPU_KV_CACHE_GIB}
    engine = VllmEngine(TeacherConfig(model=path, dtype=dtype, seed=0, engine_kwargs={"enforce_eager": True}, **cache),
                        SamplingConfig(n=1, temperature=temperature, max_tokens=max_tokens))
    await engine.start()
    try:
        limit = engine.max_model_len
        encoded = engine.encode_chats(conversations)
        for conversation, ids in zip(conversations, encoded):
            if isinstance(ids, Exception):
                raise ValueError(f"the model's chat template rejects {conversation!r}: {ids}") from ids
        done = 0

        async def complete(i: int, ids: list[int]) -> Any:
            nonlocal done
            generation = await engine.generate(ids, 1, f"eval-{i}")
            done += 1
            on_completion(done)
            return generation

        gen_started = time.perf_counter()
        generations = await asyncio.gather(*(complete(i, ids) for i, ids in enumerate(encoded)))
        gen_s = time.perf_counter() - gen_started
    finally:
        await engine.shutdown()
    return [g.samples[0] for g in generations], limit, gen_s


def evaluate(
    model: str, prompts: list[EvalPrompt], method: str = "math", max_tokens: int = 256, dtype: str = "auto",
    temperature: float = 0.0, storage: StorageConfig | None = None, on_completion: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Decode `prompts` with `model` in vLLM (greedy unless `temperature` > 0) and verify every answer;
    `on_completion(done)` counts the completions as they finish (progress).

    Returns accuracy, counts, how many completions are one well-formed `<think>` block and an answer, a sample and
    the output tokens/s.
    """
    from potstill import verify
    from potstill.pipelines.generate.reasoning import has_one_think_block

    import torch

    if not prompts:
        raise ValueError("no prompts to score; pass at least one")
    if dtype == "auto" and not torch.cuda.is_available():
        dtype = "float32"
    started = time.perf_counter()
    with local_model(model, storage) as path, _short_shutdown_grace():
        outputs, limit, gen_s = asyncio.run(_complete([p.messages for p in prompts], path, dtype, temperature, max_tokens,
                                                      on_completion or (lambda done: None)))
    completions = [o.text for o in outputs]
    verdicts = [verify(c, p.reference, method=method) for c, p in zip(completions, prompts)]
    tokens = sum(o.num_tokens for o in outputs)
    correct = sum(verdicts)
    return {
        "model": model,
        "n": len(prompts),
        "correct": correct,
        "accuracy": correct / len(prompts),
        "method": method,
        "temperature": temperature,
        "max_model_len": limit,
        "finished": sum(o.finish_reason == "stop" for o in outputs),
        "with_think_block": sum(has_one_think_block(c) for c in completions),
        "sample": {"prompt": prompts[0].messages[-1]["content"], "completion": completions[0],
                   "reference": prompts[0].reference, "correct": verdicts[0]},
        "output_tokens_per_s": round(tokens / gen_s, 1) if gen_s > 0 else None,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def trained_questions(runs: list[str], storage: StorageConfig | None = None) -> set[str]:
    """The last user message of every prompt in the committed traces of `runs` (verified or not), read through
    `potstill.read_run`, so a scoring can leave out what the student was trained on."""
    from potstill.pipelines.output.reader import read_run

    questions: set[str] = set()
    for _, table in read_run(runs, verified_only=False, storage=storage).iter_tables(["messages"]):
        questions.update(m[-1]["content"] for m in table.column("messages").to_pylist())
    return questions


def student_eval_prompts(cfg: "TrainingConfig") -> list[EvalPrompt]:
    """The held-out prompts of `cfg.eval` (none of them among the questions of `cfg.data.runs`)."""
    e = cfg.eval
    if e.prompts is None:
        raise ValueError("eval.prompts is not set; set it to arithmetic:N or a JSONL/Parquet file to score the student")
    exclude = trained_questions(cfg.data.runs, cfg.data.storage)
    try:
        return load_eval_prompts(e.prompts, e.prompt_field, e.reference_field, cfg.data.storage, exclude=exclude,
                                 limit=e.count)
    except ValueError as exc:  # name the config keys, not the command-line options
        raise ValueError(f"eval.prompts: {exc}".replace("--prompt-field", "eval.prompt_field")
                         .replace("--reference-field", "eval.reference_field")) from None


def evaluate_student(cfg: "TrainingConfig", student: str) -> dict[str, Any] | None:
    """Score the trained `student` as `cfg.eval` says (None when `eval.prompts` is unset): `potstill train`'s last step."""
    if cfg.eval.prompts is None:
        return None
    e = cfg.eval
    return {**evaluate(student, student_eval_prompts(cfg), method=e.method, max_tokens=e.max_tokens,
                       storage=cfg.data.storage), "prompts": e.prompts}


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
