"""A retiring replica waits for the Ray metrics report that carries its last recorded value, and no longer."""

from __future__ import annotations

import time

import pytest
import ray

from potstill.actors.metrics import REPORT_SLACK_S, ReplicaMetrics
from potstill.schemas.manifest import ShardStats


def test_a_replica_that_just_committed_waits_one_report_and_an_idle_one_not_at_all():
    metrics = ReplicaMetrics("run", "replica-1")
    assert metrics.unexported_s() == 0.0  # nothing recorded: nothing to carry
    metrics.result(ShardStats(samples_drawn=4, accepted_samples=3))
    metrics.committed()
    interval_s = ray._config.metrics_report_interval_ms() / 1000
    assert metrics.unexported_s() == pytest.approx(interval_s + REPORT_SLACK_S, abs=0.5)
    metrics._last_recorded = time.monotonic() - interval_s - REPORT_SLACK_S
    assert metrics.unexported_s() == 0.0
