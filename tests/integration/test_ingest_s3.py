"""Prompt ingestion from s3:// on a moto S3 server: same rows, errors and prompt ids as from a local file.

    .venv/bin/pytest tests/integration/test_ingest_s3.py

Uses the `s3_bucket` fixture of tests/conftest.py (a fresh bucket on a local
moto server, endpoint passed explicitly through StorageConfig).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potstill.pipelines.ingest.prompts import IngestError, IngestReport, iter_prompts
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import PromptsConfig

GSM8K = Path("/work/shared/data/gsm8k_train_2000.jsonl")
LINES = [
    b'{"question": "What is 2 + 2?", "answer": 4}',      # 0 valid
    b'{"question": "unterminated", "answer": 1',         # 1 invalid JSON
    b'{"question": "caf\xe9?", "answer": "1"}',          # 2 latin-1 byte
    b'{"messages": "no question here"}',                 # 3 missing field
    b'{"question": "What is 2 + 2?", "answer": 4}',      # 4 duplicate of row 0
    b'{"question": "What is 3 + 5?", "answer": 8.0}',    # 5 valid
]
EXPECTED = [(1, "<row>", "invalid_json"), (2, "question", "non_utf8"), (3, "question", "missing_field"),
            (4, "prompt_id", "duplicate")]
FIELDS = {"prompt": "question", "reference": "answer"}


def _ingest(path: str, storage, **cfg) -> tuple[list, IngestReport]:
    report = IngestReport()
    return list(iter_prompts(PromptsConfig(path=path, **cfg), storage, report)), report


def test_jsonl_from_s3_matches_local(s3_bucket, tmp_path):
    root, storage = s3_bucket
    Storage(root, storage).put("prompts/mixed.jsonl", b"\n".join(LINES) + b"\n")
    (tmp_path / "mixed.jsonl").write_bytes(b"\n".join(LINES) + b"\n")
    remote, report = _ingest(f"{root}/prompts/mixed.jsonl", storage, fields=FIELDS)
    local, _ = _ingest(str(tmp_path / "mixed.jsonl"), None, fields=FIELDS)
    assert [r.model_dump() for r in remote] == [r.model_dump() for r in local]
    assert [r.source_row for r in remote] == [0, 5] and [r.reference for r in remote] == ["4", "8.0"]
    assert [(e.row, e.field, e.kind) for e in report.errors] == EXPECTED
    assert report.source == f"{root}/prompts/mixed.jsonl"

    written = report.write(Storage(root, storage))
    assert written == f"{root}/errors/ingest.jsonl"
    back = Storage(root, storage).read_bytes("errors/ingest.jsonl").decode().splitlines()
    assert [(d["row"], d["field"], d["kind"]) for d in map(json.loads, back)] == EXPECTED
    assert json.loads(Storage(root, storage).read_bytes("errors/ingest_summary.json"))["duplicates"] == 1


def test_gsm8k_and_parquet_folder_from_s3(s3_bucket):
    root, storage = s3_bucket
    store = Storage(root, storage)
    store.put("gsm8k.jsonl", GSM8K.read_bytes())
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:300]]
    for part, chunk in enumerate((rows[:150], rows[150:])):
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(chunk), buf, row_group_size=64)
        store.put(f"gsm8k_parquet/part-{part}.parquet", buf.getvalue())
    from_jsonl, report = _ingest(f"{root}/gsm8k.jsonl", storage, fields=FIELDS)
    assert report.counts() == {"rows_read": 2000, "valid": 2000, "invalid": 0, "duplicates": 0}
    from_parquet, report = _ingest(f"{root}/gsm8k_parquet", storage, fields=FIELDS)
    assert report.rows_read == 300 and not report.errors
    assert [r.prompt_id for r in from_parquet] == [r.prompt_id for r in from_jsonl[:300]]
    assert [r.source_row for r in from_parquet] == list(range(300))


def test_missing_s3_object_and_column_fail_upfront(s3_bucket):
    root, storage = s3_bucket
    with pytest.raises(IngestError, match=r"prompts.path: no file or folder at s3://.*/absent.jsonl"):
        iter_prompts(PromptsConfig(path=f"{root}/absent.jsonl"), storage, IngestReport())
    Storage(root, storage).put("p.jsonl", LINES[0])
    with pytest.raises(IngestError, match="prompts.fields.prompt: column 'prompt' is not in"):
        iter_prompts(PromptsConfig(path=f"{root}/p.jsonl"), storage, IngestReport())
