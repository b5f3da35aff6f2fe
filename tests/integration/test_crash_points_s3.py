"""Crash at every storage call of a generation on S3 (the moto server): nothing lost, nothing duplicated, gc to the
manifest. The harness (tests/unit/output/crash_points.py) also runs on a local folder in the unit tests.

    .venv/bin/pytest tests/integration/test_crash_points_s3.py -q
"""

from __future__ import annotations

import uuid

from tests.unit.output.crash_points import COUNT, N, assert_recovers, clean_calls, crash_at, crash_points

from potstill.pipelines.output.storage import s3_filesystem
from potstill.schemas.generation import StorageConfig


def test_a_crash_at_any_s3_call_then_a_rerun_gives_the_clean_output(s3_server):
    storage = StorageConfig(endpoint_url=s3_server, max_retries=2)
    bucket = f"crash-{uuid.uuid4().hex[:10]}"
    s3_filesystem(storage).call_s3("create_bucket", Bucket=bucket)
    calls, clean = clean_calls(f"s3://{bucket}/clean", storage)
    assert len(clean) == COUNT * N
    assert ("put_if_absent", "run.json") in calls and ("put_if_absent", "_SUCCESS") in calls
    points = crash_points(calls)
    crashed = 0
    for index, when in points:
        uri = f"s3://{bucket}/c{index}-{when}"
        crashed += crash_at(uri, storage, index, when)
        assert_recovers(uri, storage, clean, f"crash {when} call {index} {calls[index]}")
    assert crashed == len(points), "some crash point was never reached: the run's storage calls are not deterministic"
