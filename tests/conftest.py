"""Shared pytest setup: small vLLM KV cache, quiet Ray, the S3 test server, and the order the two xdist workers
take the test modules in."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent

# vLLM's CPU backend reserves this many GiB of KV cache per engine: keep tests small.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A retiring replica outlives one Ray metrics report (ReplicaMetrics.unexported_s): Ray's 10 s default would add
# seconds to every run's end in the suite; 1 s reports keep that short. Read by every Ray process the tests start.
os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")


# ---- Scheduling: the suite runs on two xdist workers (`-n 2 --dist loadfile` in pyproject.toml) ----

LONGEST_MODULES_FIRST = (
    "integration/test_distill_job.py", "integration/test_readme.py", "integration/test_scaling_cluster.py",
    "integration/test_chaos_replicas.py", "integration/test_api_teacher.py", "integration/test_submit.py",
    "integration/test_chaos_driver.py", "integration/test_chaos_storage.py", "integration/test_chaos_cluster.py",
    "integration/test_gpu_proof_tiny.py", "integration/test_generate.py", "integration/test_metrics_export.py",
    "integration/test_vllm_engine.py", "unit/distill/test_parallel.py", "integration/test_export.py",
    "unit/test_packaging.py", "integration/test_crash_points_s3.py",
)
"""Modules whose tests take longest (`--durations` of a whole run), longest first. Each worker takes a whole module
(its engines and clusters are module-scoped) and the next one in collection order whenever it finishes one: when
the long modules go first and the short ones fill in behind them, neither worker is left with a long module to
run alone at the end. A module missing here only runs later; keep the order roughly that of the latest run."""


_RANK = {path: rank for rank, path in enumerate(LONGEST_MODULES_FIRST)}
_renamed = [path for path in LONGEST_MODULES_FIRST if not (_TESTS / path).is_file()]
if _renamed:
    raise RuntimeError(f"LONGEST_MODULES_FIRST names modules that are gone: {_renamed}; give their new paths")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return _RANK.get(Path(str(item.fspath)).resolve().relative_to(_TESTS).as_posix(), len(_RANK))

    items.sort(key=rank)  # stable: a module's own tests keep their order, as do the unranked modules


# ---- S3: a real S3 HTTP endpoint (moto) for the storage and commit tests ----

_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "potstill-test-key",
    "AWS_SECRET_ACCESS_KEY": "potstill-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never read a developer's real ~/.aws while testing.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
# Unset so that nothing silently depends on them (the endpoint is always passed explicitly).
_UNSET_AWS_ENV = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SECURITY_TOKEN")


def _serialize_moto_writes(mp: pytest.MonkeyPatch) -> threading.RLock:
    """Make moto's If-None-Match check-then-store atomic, as it is on real S3; returns the lock writes hold.

    moto checks "does the key exist" and stores the object in separate steps
    of a threaded server, so two racing conditional PUTs could both pass;
    serializing object writes keeps the race tests about our protocol.
    """
    from moto.s3.responses import S3Response

    lock = threading.RLock()
    for name in ("put_object", "_key_response_post"):
        original = getattr(S3Response, name)

        def locked(self, *args, __original=original, **kwargs):
            with lock:
                try:
                    return __original(self, *args, **kwargs)
                finally:
                    _LAST_WRITE[0] = time.monotonic()

        mp.setattr(S3Response, name, locked)
    return lock


_MOTO_WRITES: list[threading.RLock] = []
_LAST_WRITE = [0.0]  # monotonic time the S3 server last finished an object write
WRITES_QUIET_S = 3.0
"""A killed process's last PUT can still sit in the server's socket, not yet in a handler: a write that lands after
the kill lands within this long of the one before it."""


@pytest.fixture(scope="session", autouse=True)
def aws_test_env():
    """Fake AWS credentials in os.environ for the whole session; restored after.

    Autouse so they are in place before any Ray cluster starts (workers copy
    the driver's env at start) and so no test can reach a real AWS account.
    """
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _FAKE_AWS_ENV.items():
            mp.setenv(key, value)
        for key in _UNSET_AWS_ENV:
            mp.delenv(key, raising=False)
        yield dict(_FAKE_AWS_ENV)


@pytest.fixture(scope="session")
def s3_server(aws_test_env):
    """A moto S3 server on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as mp:
        _MOTO_WRITES.append(_serialize_moto_writes(mp))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # 0: the OS picks a free port
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
            _MOTO_WRITES.clear()


@pytest.fixture(scope="session")
def s3_writes_landed(s3_server):
    """A function that returns once no object write is in progress on the S3 server and none finished for
    WRITES_QUIET_S: after the processes of a killed run are gone, what the bucket holds then is final."""

    def landed() -> None:
        while True:
            with _MOTO_WRITES[0]:
                quiet = time.monotonic() - _LAST_WRITE[0]
            if quiet >= WRITES_QUIET_S:
                return
            time.sleep(WRITES_QUIET_S - quiet)

    return landed


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket; yields (run root URI inside it, StorageConfig pointing at the server)."""
    from potstill.pipelines.output.storage import s3_filesystem
    from potstill.schemas.generation import StorageConfig

    config = StorageConfig(endpoint_url=s3_server, region="us-east-1", max_retries=2)
    bucket = f"potstill-test-{uuid.uuid4().hex[:12]}"
    s3_filesystem(config).call_s3("create_bucket", Bucket=bucket)
    yield f"s3://{bucket}/runs/test", config


RAY_TEST_CPUS = 4
"""Logical CPUs of the shared test cluster: 2 Ray Train workers + Ray Data + a generation run's controller and
replica fit at once (test_distill_job); the generation tests keep max_replicas at 1, so more CPUs start no more."""


@pytest.fixture(scope="session")
def _ray_for_the_session():
    """Shuts down the shared local Ray at the end of the session (whichever module started it last)."""
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_ray_for_the_session):
    """Local Ray shared by every module that asks for it: started by the first, kept for the next (a cluster start
    is seconds of every module's setup). A module that needs another cluster (test_chaos_cluster's multi-node
    one) shuts this one down first; the next module that asks starts it again."""
    from potstill.cluster.connect import ensure_ray

    ensure_ray(None, num_cpus=RAY_TEST_CPUS, dashboard=True)  # the dashboard serves Ray Train's State API polls
    yield
