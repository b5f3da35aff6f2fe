"""Shared pytest setup: small vLLM KV cache, quiet Ray, and the S3 test server."""

from __future__ import annotations

import os

# vLLM's CPU backend reserves this many GiB of KV cache per engine: keep tests small.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
