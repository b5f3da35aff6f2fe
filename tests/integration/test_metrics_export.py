"""The potstill metrics reach Prometheus through a real Ray head: `ray start --head --metrics-export-port`,
`potstill generate --address` against it (the API teacher: `vllm serve`), then the head's /metrics endpoint.

Counters are read after the run; gauges (replicas, queue depth, spend) are
read while it runs, since Ray drops a gauge a few report intervals after the
process that set it is gone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vllm_server import SERVED_NAME, free_port  # noqa: E402

from potstill.cli.common import last_json_line  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SERIES = re.compile(r'^(ray_potstill_[a-z_]+)\{([^}]*)\} ([0-9.eE+-]+)$')


class RayHead:
    """`ray start --head --block` in its own process group, temp dir and ports; stopped by that group."""

    def __init__(self):
        self.gcs_port, self.metrics_port = free_port(), free_port()
        self.temp_dir = tempfile.mkdtemp(prefix="ps-ray-", dir="/tmp")  # short: Ray's socket paths must fit
        self.env = dict(os.environ, RAY_AUTH_MODE="disabled")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def __enter__(self) -> "RayHead":
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={self.gcs_port}",
               f"--metrics-export-port={self.metrics_port}", f"--dashboard-agent-listen-port={free_port()}",
               f"--ray-client-server-port={free_port()}", f"--dashboard-port={free_port()}",
               f"--temp-dir={self.temp_dir}", "--num-cpus=2",
               "--include-dashboard=false", '--system-config={"metrics_report_interval_ms": 1000}']
        self.log = open(Path(self.temp_dir) / "head.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited: {(Path(self.temp_dir) / 'head.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.metrics_url, timeout=2).read()
                return self
            except OSError:
                time.sleep(1)
        raise TimeoutError("the Ray head's metrics endpoint did not come up within 120 s")

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def scrape(self, run_id: str) -> dict[tuple[str, str], float]:
        """(series, labels) -> value of this run's potstill series."""
        out = {}
        text = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        for line in text.splitlines():
            m = SERIES.match(line)
            if m and f'run_id="{run_id}"' in m.group(2):
                labels = ",".join(sorted(p for p in m.group(2).split(",") if p.split("=")[0] in
                                         ("replica", "verdict", "state", "le", "cause")))
                out[(m.group(1), labels)] = float(m.group(3))
        return out

    def __exit__(self, *exc) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # raylet, GCS and workers share the group
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def test_a_ray_heads_metrics_endpoint_exposes_the_potstill_metrics_after_a_run(vllm_server, tmp_path):
    run_id = "metrics"
    config = {
        "run_id": run_id,
        "prompts": {"arithmetic": {"count": 24, "digits": 3, "seed": 7}},
        "teacher": {"engine": "openai", "model": SERVED_NAME, "api": {
            "base_url": vllm_server.base_url, "price": {"input_usd_per_million": 0.55, "output_usd_per_million": 2.19}}},
        "sampling": {"n": 2, "temperature": 0.6, "max_tokens": 192},
        "output": {"uri": str(tmp_path / "out"), "prompts_per_shard": 8},
        # One unit at a time: spend is above zero while the second and third units run, long enough for Ray to
        # export the gauge. Three units at once all commit in the run's last moment, and CI once saw spend 0 only.
        "replicas": {"units_in_flight": 1, "min_sequences_in_flight": None},
    }
    path = tmp_path / "gen.yaml"
    path.write_text(json.dumps(config))
    with RayHead() as head:
        seen: dict[tuple[str, str], float] = {}
        done = threading.Event()

        def watch():  # gauges live only while the controller does
            while not done.is_set():
                try:
                    for key, value in head.scrape(run_id).items():
                        seen[key] = max(seen.get(key, 0.0), value)
                except OSError:
                    pass
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        proc = subprocess.run([sys.executable, "-m", "potstill.cli", "generate", str(path), "--address", head.address,
                               "--json"], capture_output=True, text=True, timeout=600, env=head.env, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = last_json_line(proc.stdout)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = head.scrape(run_id)
            if after.get(("ray_potstill_units_committed_total", 'replica="replica-1"'), 0) >= 3:
                break
            time.sleep(1)
        done.set()
        watcher.join()
    print("MEASURED metrics after the run: " + ", ".join(f"{n}{{{l}}}={v:g}" for (n, l), v in sorted(after.items())
                                                         if not n.endswith("_bucket")))
    print("MEASURED gauges during the run (max): " + ", ".join(f"{n}{{{l}}}={v:g}" for (n, l), v in sorted(seen.items())
                                                               if n in ("ray_potstill_replicas", "ray_potstill_queue_depth",
                                                                        "ray_potstill_spend_usd")))
    tokens = sum(v for (name, _), v in after.items() if name == "ray_potstill_tokens_generated_total")
    assert tokens == summary["totals"]["completion_tokens"] > 0
    accepted = after.get(("ray_potstill_traces_total", 'replica="replica-1",verdict="accepted"'), 0)
    assert accepted == summary["totals"]["accepted_samples"] > 0
    assert after[("ray_potstill_units_committed_total", 'replica="replica-1"')] == 3
    assert after[("ray_potstill_request_latency_s_count", 'replica="replica-1"')] == 24
    assert after[("ray_potstill_prompt_tokens_total", 'replica="replica-1"')] > 0
    assert seen.get(("ray_potstill_replicas", 'state="live"'), 0) >= 1
    assert seen.get(("ray_potstill_queue_depth", 'state="inflight"'), 0) >= 1
    assert seen.get(("ray_potstill_spend_usd", ""), 0) > 0
