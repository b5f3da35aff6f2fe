"""The replica count over time of each controller attempt: `scaling/<attempt>.json`, merged into the manifest.

    recorder = ScalingRecorder(storage, attempt_token)
    recorder.save(history.samples)                          # at most every 30 s; final=True writes now
    finalize_run(..., scaling=recorder.attempts())          # every attempt's record, oldest first

A resumed run had several controllers; each keeps its own record (a plain
overwrite of its own object), so the manifest shows the pool across all of
them. Nothing here is part of the exactly-once output.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from pydantic import ValidationError

from potstill.pipelines.output.storage import Storage
from potstill.schemas.manifest import ReplicaCountSample, ScalingAttempt

log = logging.getLogger(__name__)

SCALING_DIR = "scaling"


class ScalingRecorder:
    """Writes this controller's samples; reads every attempt's."""

    def __init__(self, storage: Storage, token: str, *, min_interval_s: float = 30.0,
                 clock: Callable[[], float] = time.time):
        self.storage = storage
        self.started_at = datetime.now(timezone.utc)
        self.rel = f"{SCALING_DIR}/{self.started_at:%Y%m%dT%H%M%S}-{token}.json"
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._saved_at: float | None = None
        self._saved_len = -1

    def save(self, samples: list[ReplicaCountSample], final: bool = False) -> None:
        """Write the samples if they changed (at most every `min_interval_s` unless `final`)."""
        if len(samples) == self._saved_len and not final:
            return
        now = self.clock()
        if not final and self._saved_at is not None and now - self._saved_at < self.min_interval_s:
            return
        record = ScalingAttempt(started_at=self.started_at, samples=samples)
        self.storage.put(self.rel, record.model_dump_json().encode())
        self._saved_at, self._saved_len = now, len(samples)

    def attempts(self) -> list[ScalingAttempt]:
        """Every attempt's record under scaling/, oldest first (unreadable ones are skipped with a warning)."""
        rels = [rel for rel in self.storage.list(SCALING_DIR) if rel.endswith(".json")]
        found = []
        for rel, data in self.storage.read_many(rels).items():
            try:
                found.append(ScalingAttempt.model_validate_json(data))
            except ValidationError as exc:
                log.warning("%s is not a scaling record (%s); leaving it out of the manifest",
                            self.storage.uri_of(rel), exc.errors()[0]["msg"])
        return sorted(found, key=lambda a: a.started_at)
