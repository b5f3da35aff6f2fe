"""The vLLM teacher engine: one `AsyncLLM` with continuous batching.

Every `generate` call is an independent request: new requests enter the
running batch as others finish, so there is never a synchronous batch
barrier. Concurrency comes from the caller (a replica actor awaiting many
`generate` calls at once). vllm is imported only in `start()`.

Unless stop strings need vLLM's running text, vLLM's per-token
detokenization is off and each finished sample is decoded once
(`decode_completion`): with top-k logprobs vLLM would otherwise turn every
top-k token into a string, token by token, in the replica's process, which
then spends more time detokenizing than feeding the engine (the measured
gain is in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from potstill.pipelines.host.cpu_affinity import keep_frontend_off_worker_cores
from potstill.pipelines.engines.cpu_executor import model_in_engine_core
from potstill.pipelines.engines.cpu_memory import check_cpu_memory
from potstill.pipelines.engines.ipc_sockets import use_potstill_ipc_folder
from potstill.pipelines.engines.protocol import EngineFailure, Generation, Sample
from potstill.pipelines.models.assets import resolve_model
from potstill.pipelines.models.chat_encoding import encode_rendered_chats
from potstill.schemas.generation import SamplingConfig, TeacherConfig

log = logging.getLogger(__name__)

_FINISH_REASONS = {"stop", "length", "abort"}
PROMPT_CONTEXT_TOKENS = 8
"""Prompt tokens decoded in front of a completion, so its first token reads as it does after the prompt."""
VLLM_DEFAULT_MAX_LOGPROBS = 20
"""vLLM's default `max_logprobs`; sampling.logprobs above it raises the engine's limit to match."""
_REPLACEMENT = "\ufffd"  # what a decoder makes of a character's bytes cut short


def _topk_from_flat(flat: Any, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Per position, the ids and logprobs of ranks 1..k (vLLM also returns the sampled token)."""
    ids_out: list[list[int]] = []
    lps_out: list[list[float]] = []
    token_ids, logprobs, ranks = flat.token_ids, flat.logprobs, flat.ranks
    for start, end in zip(flat.start_indices, flat.end_indices):
        ids: list[int] = []
        lps: list[float] = []
        for j in range(start, end):
            rank = ranks[j]
            if rank is not None and rank <= k and token_ids[j] not in ids:
                ids.append(token_ids[j])
                lps.append(logprobs[j])
        ids_out.append(ids)
        lps_out.append(lps)
    return ids_out, lps_out


def decode_completion(decoder: Any, prompt_token_ids: list[int], token_ids: list[int]) -> str:
    """The text vLLM's incremental detokenizer (a decode stream primed with the prompt) makes of `token_ids`,
    in two `tokenizers.Tokenizer.decode` calls.

    The completion is decoded behind the prompt's last tokens and their text cut off: decoded alone, a
    SentencePiece completion would lose the space its first token starts with. A prompt that ends inside a
    character (byte-level tokens) leaves that character whole to the completion.
    """
    context = prompt_token_ids[-PROMPT_CONTEXT_TOKENS:]
    head = decoder.decode(context, skip_special_tokens=True).rstrip(_REPLACEMENT)
    full = decoder.decode(context + token_ids, skip_special_tokens=True)
    if full.startswith(head):
        return full[len(head):]
    return decoder.decode(token_ids, skip_special_tokens=True)


def text_token_ids(out: Any) -> list[int]:
    """The ids of a vLLM `CompletionOutput` its detokenizer turns into text: all but the token that stopped
    the sample (EOS or one of `stop_token_ids`; `stop_reason` holds a string only for stop strings)."""
    ids = list(out.token_ids)
    if out.finish_reason == "stop" and not isinstance(out.stop_reason, str) and ids:
        return ids[:-1]
    return ids


class VllmEngine:
    """`TeacherEngine` over vLLM's AsyncLLM."""

    def __init__(self, teacher: TeacherConfig, sampling: SamplingConfig):
        self.teacher = teacher
        self.sampling = sampling
        self.model_path = resolve_model(teacher.model)
        self.model_name = teacher.model
        # The configured revision; a generation replica sets the run's pinned one (run.json), computed once per run.
        self.revision = teacher.revision
        self._llm = None
        self._tokenizer = None
        self._params = None
        self._decoder = None
        self._params_cache: dict[tuple[int, int | None], Any] = {}
        self.batch_capacity: int | None = None

    def engine_args(self) -> dict[str, Any]:
        """The AsyncEngineArgs keywords this config maps to (pure; unit-tested)."""
        t = self.teacher
        args: dict[str, Any] = {
            "model": self.model_path,
            "tokenizer": resolve_model(t.tokenizer) if t.tokenizer else self.model_path,
            "dtype": t.dtype,
            "seed": t.seed,
            "tensor_parallel_size": t.tensor_parallel_size,
            "gpu_memory_utilization": t.gpu_memory_utilization,
            "disable_log_stats": True,
            "scheduling_policy": "priority" if t.schedule == "longest_first" else "fcfs",
        }
        if t.max_model_len:
            args["max_model_len"] = t.max_model_len
        if t.max_num_seqs:
            args["max_num_seqs"] = t.max_num_seqs
        if t.kv_cache_gib:
            args["kv_cache_memory_bytes"] = int(t.kv_cache_gib * 2**30)
        if t.revision and not Path(self.model_path).is_dir():
            args["revision"] = t.revision
        if self.sampling.logprobs > VLLM_DEFAULT_MAX_LOGPROBS:  # vLLM refuses every request above its max_logprobs
            args["max_logprobs"] = self.sampling.logprobs
        args.update(t.engine_kwargs)
        return args

    async def start(self) -> None:
        from vllm import AsyncEngineArgs, SamplingParams
        from vllm.platforms import current_platform
        from vllm.sampling_params import RequestOutputKind
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        args = self.engine_args()
        use_potstill_ipc_folder()
        if current_platform.is_cpu():
            check_cpu_memory(args)
        self.load_tokenizer()
        # Offline batch generation: vLLM's LLM-class batch defaults (CPU: 256 sequences and 4096 tokens a step,
        # H100: 1024 and 16384), not the async engine's serving defaults (128 and 2048), which halve the batch.
        with model_in_engine_core(args, on_cpu=current_platform.is_cpu()):
            self._llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args), usage_context=UsageContext.LLM_CLASS)
        self.batch_capacity = self._llm.vllm_config.scheduler_config.max_num_seqs
        if self._llm.vllm_config.device_config.device_type == "cpu":
            moved = keep_frontend_off_worker_cores(os.getpid())
            if moved:
                log.info("vLLM's model worker computes on cores %s; its frontend now runs on %s",
                         moved["worker_cores"], moved["frontend_cores"])
        s = self.sampling
        # vLLM detokenizes every running sequence token by token (and every top-k logprob token) in this
        # process; a finished sample decoded once costs a fraction of that. Stop strings are matched on
        # the text as it grows, so with them vLLM keeps detokenizing.
        self._decoder = None if s.stop else getattr(self._tokenizer, "backend_tokenizer", None)
        self._params = SamplingParams(
            temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p,
            max_tokens=s.max_tokens, stop=s.stop or None, logprobs=s.logprobs or None,
            flat_logprobs=bool(s.logprobs), ignore_eos=s.ignore_eos, output_kind=RequestOutputKind.FINAL_ONLY,
            detokenize=self._decoder is None,
        )

    @property
    def max_model_len(self) -> int:
        """The context length of the started engine (prompt and completion tokens together)."""
        return self._llm.vllm_config.model_config.max_model_len

    def load_tokenizer(self) -> None:
        """The tokenizer `encode_chats` uses (loaded by `start`; callable alone, without vLLM)."""
        from transformers import AutoTokenizer

        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.engine_args()["tokenizer"])

    def encode_chats(self, conversations: list[list[dict[str, str]]]) -> list[list[int] | Exception]:
        # Templates render one by one (a conversation the template rejects fails alone); the texts are
        # tokenized in one batch call, which costs a fraction of one call per prompt. Special-token text a user
        # typed into a message stays text (`chat_encoding`): `<|end|>` in a prompt never ends the turn.
        out: list[list[int] | Exception] = []
        texts: list[str] = []
        rendered: list[list[dict[str, str]]] = []
        for messages in conversations:
            try:
                texts.append(self._tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False, chat_template=self.teacher.chat_template))
                rendered.append(messages)
                out.append([])
            except Exception as exc:  # noqa: BLE001 - returned in the conversation's place
                out.append(exc)
        encoded = iter(encode_rendered_chats(self._tokenizer, texts, rendered))
        return [slot if isinstance(slot, Exception) else next(encoded) for slot in out]

    async def generate(self, prompt_token_ids: list[int], n: int, request_id: str,
                       max_tokens: int | None = None) -> Generation:
        from vllm.inputs import tokens_input
        from vllm.v1.engine.exceptions import EngineDeadError

        params = self._params_for(n, max_tokens)
        final = None
        # Already-rendered input (`tokens_input`): AsyncLLM validates it inline. A raw {"prompt_token_ids": ...}
        # dict is deprecated there and goes through its renderer on a thread pool, one hop per request (a visible
        # share of the replica actor's time in the uniform benchmark: docs/PERFORMANCE.md).
        try:
            async for output in self._llm.generate(tokens_input(prompt_token_ids), params, request_id,
                                                   priority=self._priority(params)):
                final = output
        except EngineDeadError as exc:
            raise EngineFailure(f"vLLM engine died: {exc}") from exc
        if final is None:
            raise EngineFailure(f"vLLM returned no output for request {request_id}")
        samples = []
        for out in final.outputs:
            topk_ids = topk_lps = None
            if self.sampling.logprobs and out.logprobs is not None:
                topk_ids, topk_lps = _topk_from_flat(out.logprobs, self.sampling.logprobs)
            reason = out.finish_reason if out.finish_reason in _FINISH_REASONS else "error"
            if self._decoder is None:
                text = out.text
            else:
                text = decode_completion(self._decoder, prompt_token_ids, text_token_ids(out))
            samples.append(Sample(text, list(out.token_ids), reason, topk_ids, topk_lps))
        return Generation(prompt_tokens=len(prompt_token_ids), samples=samples)

    def _priority(self, params: Any) -> int:
        """vLLM priority of a request (lower starts first): the longest budget first under `longest_first`."""
        return -params.max_tokens if self.teacher.schedule == "longest_first" else 0

    def _params_for(self, n: int, max_tokens: int | None) -> Any:
        """Shared SamplingParams per (n, max_tokens): vLLM copies them per request itself, and a deep copy
        here as well would cost more than the rest of a request's bookkeeping in this process."""
        key = (n, max_tokens)
        params = self._params_cache.get(key)
        if params is None:
            params = self._params.clone()
            params.n = n
            if max_tokens is not None:
                params.max_tokens = max_tokens
            self._params_cache[key] = params
        return params

    async def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None
