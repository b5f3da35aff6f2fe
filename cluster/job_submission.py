"""Run potstill jobs on a running Ray cluster through Ray's Jobs API, one submission per attempt.

    potstill submit examples/arithmetic.yaml --address http://127.0.0.1:8265
    jobs = RunJobs(resolve_address(None), find_token())
    outcome = jobs.submit(job)             # "submitted", or "running" / "succeeded": nothing new started
    jobs.logs(jobs.latest(run_id)); jobs.stop(jobs.latest(run_id))

A run's attempts are the Jobs API submissions `potstill-<kind>-<run id>-<n>`
(metadata `potstill_run_id`, `potstill_kind`, `potstill_attempt`). Like
KubeRay's RayJob controller, a submit looks before it leaps: while an attempt
is PENDING or RUNNING a second submit starts nothing and says where that one
is; after SUCCEEDED it starts nothing either; after STOPPED or FAILED it
submits attempt n+1, which resumes the run from its committed shards
(generation) or its last checkpoint (training). Two racing submits compute
the same next id and the cluster accepts only one (submission ids are
unique), so the loser reports the winner.

The job's config travels as its working_dir (one file); its runtime env
carries only the non-secret settings of `connect.FORWARDED_ENV`, never
credentials (the dashboard shows a runtime env): the driver and workers get
S3 access from their own environment (pod ServiceAccount or Secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from potstill.cluster.auth_token import AuthToken
from potstill.cluster.connect import forwarded_env
from potstill.cluster.job_config import JobConfig, job_metadata, submission_id
from potstill.cluster.kuberay_rules import credential_reason

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
LIVE = ("PENDING", "RUNNING")
TERMINAL = ("STOPPED", "SUCCEEDED", "FAILED")
AGENT_WAIT_S = 120
"""How long a submit waits for the head's job agent of a cluster that just started."""
_ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


class ClusterError(RuntimeError):
    """The cluster cannot be reached or refused a request; the message says what to do."""


def resolve_address(address: str | None) -> str:
    """The dashboard URL: --address, else RAY_API_SERVER_ADDRESS, else an http(s) RAY_ADDRESS, else the local default.

    A RAY_ADDRESS without a scheme (host:6379, `auto`) names the GCS for
    ray.init, not the Jobs API, and is passed over.
    """
    if address:
        return address if "://" in address else f"http://{address}"
    api = os.environ.get("RAY_API_SERVER_ADDRESS", "")
    if api and api != "auto":
        return api if "://" in api else f"http://{api}"
    ray_address = os.environ.get("RAY_ADDRESS", "")
    if ray_address.startswith(("http://", "https://")):
        return ray_address
    return DEFAULT_ADDRESS


def job_env() -> dict[str, str]:
    """The environment a submitted job gets: FORWARDED_ENV's non-secret settings, nothing credential-like (AWS_*).

    RAY_OVERRIDE_JOB_RUNTIME_ENV=1: the driver's `ensure_ray` passes these
    same variables to ray.init, and Ray refuses a driver whose ray.init
    repeats a variable of the job's runtime env unless it is set.
    """
    env = {k: v for k, v in forwarded_env().items() if credential_reason(k, v) is None}
    return {**env, "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}


@dataclass(frozen=True)
class Attempt:
    """One submission of a run, as the cluster reports it."""

    submission_id: str
    run_id: str
    kind: str
    attempt: int
    status: str
    message: str | None = None
    start_time: int | None = None
    end_time: int | None = None

    @classmethod
    def from_details(cls, details: Any) -> "Attempt | None":
        meta = details.metadata or {}
        if "potstill_run_id" not in meta or not details.submission_id:
            return None
        return cls(details.submission_id, meta["potstill_run_id"], meta.get("potstill_kind", "?"),
                   int(meta.get("potstill_attempt", 0)), str(getattr(details.status, "value", details.status)),
                   details.message, details.start_time, details.end_time)

    @property
    def live(self) -> bool:
        return self.status in LIVE


@dataclass(frozen=True)
class SubmitOutcome:
    """What `submit` did: `submitted` a new attempt, or found the run `running` / `succeeded` and started nothing."""

    action: str
    attempt: Attempt
    address: str
    previous: Attempt | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "address": self.address, **asdict(self.attempt),
                "previous": asdict(self.previous) if self.previous else None}


@contextlib.contextmanager
def _explicit_address() -> Iterator[None]:
    """Ray's client lets RAY_ADDRESS override the address it is given; potstill resolved it already."""
    saved = {k: os.environ.pop(k) for k in _ADDRESS_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class RunJobs:
    """potstill runs on one Ray cluster's Jobs API."""

    def __init__(self, address: str, token: AuthToken | None):
        from ray.job_submission import JobSubmissionClient

        self.address = address
        self.token = token
        with self._errors("connect to"), _explicit_address():
            self.client = JobSubmissionClient(address, headers=token.headers() if token else None)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Ray's and requests' failures as one line that says what to do (and never the token)."""
        import requests

        from ray.exceptions import AuthenticationError

        try:
            yield
        except AuthenticationError as exc:
            if "401" in str(exc) or "required" in str(exc).lower():
                raise ClusterError(
                    f"could not {action} the Ray cluster at {self.address}: it has token authentication on and no token "
                    "was sent; set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or pass --token-file (on KubeRay: "
                    "kubectl -n potstill get secret potstill-ray-token -o jsonpath='{.data.auth_token}' | base64 -d "
                    "> ~/.ray/potstill-token && chmod 600 ~/.ray/potstill-token)") from None
            raise ClusterError(f"could not {action} the Ray cluster at {self.address}: it refused the "
                               f"{self.token or 'token'}; use the token of that cluster") from None
        except (ConnectionError, requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise ClusterError(f"could not {action} the Ray cluster at {self.address}: no Ray dashboard answers there "
                               f"({type(exc).__name__}); start the cluster, or forward its port "
                               "(kubectl -n potstill port-forward svc/potstill-head-svc 8265:8265), "
                               "or pass --address http://HEAD:8265") from None
        except RuntimeError as exc:  # the Jobs API answered with an error (a 404 from something that is not Ray, ...)
            raise ClusterError(f"could not {action} the Ray cluster at {self.address}: {exc}") from None

    def attempts(self, run_id: str, kind: str | None = None) -> list[Attempt]:
        """Every submission of `run_id` (of `kind`, when given) on this cluster, oldest attempt first."""
        with self._errors("list the jobs of"):
            found = [Attempt.from_details(d) for d in self.client.list_jobs()]
        return sorted((a for a in found if a and a.run_id == run_id and kind in (None, a.kind)),
                      key=lambda a: (a.attempt, a.start_time or 0))

    def latest(self, run_id: str) -> Attempt:
        """The run's most recent attempt; ClusterError when the cluster never saw the run."""
        attempts = self.attempts(run_id)
        if not attempts:
            raise ClusterError(f"no job of run {run_id!r} on the Ray cluster at {self.address}; "
                               f"`potstill submit CONFIG.yaml --address {self.address}` starts one")
        return max(attempts, key=lambda a: (a.start_time or 0, a.attempt))

    def status(self, attempt: Attempt) -> Attempt:
        """The attempt with its current status."""
        with self._errors("read the job of"):
            info = self.client.get_job_info(attempt.submission_id)
        return Attempt(attempt.submission_id, attempt.run_id, attempt.kind, attempt.attempt,
                       str(getattr(info.status, "value", info.status)), info.message, info.start_time, info.end_time)

    def submit(self, job: JobConfig) -> SubmitOutcome:
        """Submit the next attempt of `job`'s run, unless one is live or one succeeded (then report it)."""
        attempts = self.attempts(job.run_id, job.kind)
        live = [a for a in attempts if a.live]
        if live:
            return SubmitOutcome("running", live[-1], self.address)
        last = attempts[-1] if attempts else None
        if last is not None and last.status == "SUCCEEDED":
            return SubmitOutcome("succeeded", last, self.address)
        number = (last.attempt if last else 0) + 1
        sid = submission_id(job.kind, job.run_id, number)
        metadata = {**job_metadata(job, number), "potstill_config_source": job.source}
        with tempfile.TemporaryDirectory(prefix="potstill-submit-") as folder:
            (Path(folder) / job.file_name).write_text(job.yaml(), encoding="utf-8")
            try:
                self._submit_when_ready(entrypoint=f"potstill {job.kind} {job.file_name}", submission_id=sid,
                                        runtime_env={"working_dir": folder, "env_vars": job_env()}, metadata=metadata)
            except ClusterError as exc:
                if "already exists" not in str(exc):
                    raise
                winner = next(a for a in self.attempts(job.run_id, job.kind) if a.submission_id == sid)
                return SubmitOutcome("running", winner, self.address, last)  # another submit won the race
        return SubmitOutcome("submitted", Attempt(sid, job.run_id, job.kind, number, "PENDING"), self.address, last)

    def _submit_when_ready(self, wait_s: float = AGENT_WAIT_S, **job: Any) -> None:
        """submit_job, waiting out a head node whose job agent has not registered yet (a cluster just started).

        The dashboard answers "No available agent to submit job" before any
        job exists, so a retry cannot start a second one (and the submission id
        is unique anyway).
        """
        deadline = time.monotonic() + wait_s
        while True:
            try:
                with self._errors("submit to"):
                    self.client.submit_job(**job)
                return
            except ClusterError as exc:
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def logs(self, attempt: Attempt) -> str:
        """Everything the attempt's driver printed so far."""
        with self._errors("read the logs from"):
            return self.client.get_job_logs(attempt.submission_id)

    def follow(self, attempt: Attempt, write: Callable[[str], None]) -> Attempt:
        """Stream the attempt's logs until it ends; returns its final state."""

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(attempt.submission_id):
                write(chunk)

        with self._errors("follow the logs on"):
            asyncio.run(tail())
        return self.status(attempt)

    def stop(self, attempt: Attempt, timeout_s: float = 120, poll_s: float = 0.5) -> Attempt:
        """Ask the cluster to stop the attempt (SIGTERM to its driver, then SIGKILL) and wait until it has."""
        with self._errors("stop a job on"):
            self.client.stop_job(attempt.submission_id)
        deadline = time.monotonic() + timeout_s
        current = self.status(attempt)
        while current.status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(poll_s)
            current = self.status(attempt)
        return current
