"""A 128 MB single line in a prompts file is skipped as a row error without ever being held in memory whole.

    .venv/bin/pytest tests/unit/ingest/test_long_lines.py -q
"""

from __future__ import annotations

import json
import tracemalloc

from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts
from potstill.pipelines.ingest.sources import MAX_LINE_BYTES
from potstill.schemas.generation import PromptsConfig

LONG = 128 << 20


def test_a_128_mb_line_is_reported_and_skipped_with_bounded_memory(tmp_path):
    path = tmp_path / "prompts.jsonl"
    with open(path, "wb") as f:
        f.write(json.dumps({"prompt": "first?"}).encode() + b"\n")
        f.write(b'{"prompt": "')
        for _ in range(LONG >> 20):
            f.write(b"x" * (1 << 20))
        f.write(b'"}\n')
        f.write(json.dumps({"prompt": "last?"}).encode() + b"\n")
    report = IngestReport()
    tracemalloc.start()
    try:
        prompts = list(iter_prompts(PromptsConfig(path=str(path)), None, report))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [p.messages[-1].content for p in prompts] == ["first?", "last?"]
    (error,) = report.errors
    assert error.row == 1 and error.kind == "line_too_long" and f"{LONG + 14:,} bytes" in error.reason
    assert peak < 2 * MAX_LINE_BYTES < LONG  # the long line was never held whole
