"""Crash at every storage call of a generation (local folder): nothing lost, nothing duplicated, gc to the manifest.

    .venv/bin/pytest tests/unit/output/test_crash_points.py -q

The same harness (crash_points.py) runs against the moto S3 server in
tests/integration/test_crash_points_s3.py.
"""

from __future__ import annotations

from tests.unit.output.crash_points import COUNT, N, assert_recovers, clean_calls, crash_at, crash_points

from potstill.schemas.generation import StorageConfig


def test_a_crash_at_any_storage_call_then_a_rerun_gives_the_clean_output(tmp_path):
    storage = StorageConfig()
    calls, clean = clean_calls(str(tmp_path / "clean"), storage)
    assert len(clean) == COUNT * N
    points = crash_points(calls)
    crashed = 0
    for index, when in points:
        uri = str(tmp_path / f"c{index}-{when}")
        crashed += crash_at(uri, storage, index, when)
        assert_recovers(uri, storage, clean, f"crash {when} call {index} {calls[index]}")
    assert crashed == len(points), "some crash point was never reached: the run's storage calls are not deterministic"
