"""Prompt ingestion: row validation, dedup, Parquet/JSONL parity, templates, streaming, real datasets.

    .venv/bin/pytest tests/unit/ingest/test_prompts.py
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potstill.pipelines.ingest import sources as ingest_sources
from potstill.pipelines.ingest.prompts import IngestError, IngestReport, RowError, iter_prompts
from potstill.schemas.generation import PromptsConfig
from potstill.schemas.prompt import prompt_id_of

DATA = Path("/work/shared/data")

# One line per case; the comment is the line (= row) number.
MIXED_LINES = [
    b'{"question": "What is 2 + 2?", "answer": 4, "id": 7}',                # 0 valid
    b'{"question": "unterminated", "answer": 1',                            # 1 invalid JSON
    b'{"question": "caf\xe9 au lait?", "answer": "1"}',                     # 2 latin-1 byte
    b'{"question": "   ", "answer": "1"}',                                  # 3 empty prompt
    b'{"prompt": "where is my question?", "answer": "1"}',                  # 4 missing field
    json.dumps({"question": "x" * 200, "answer": "1"}).encode(),            # 5 over-length
    b'{"question": "What is 3 + 5?", "answer": "8", "id": 8}',              # 6 valid
    b'{"question": "What is 2 + 2?", "answer": 4, "id": 9}',                # 7 duplicate of row 0
    b"",                                                                    # 8 blank: skipped, still counted
    b'{"question": "Float answer?", "answer": 27.0, "id": 10}',             # 9 valid, reference "27.0"
    b"[1, 2, 3]",                                                           # 10 not an object
    b'{"question": "Ends without newline", "answer": "x"}',                 # 11 valid
]
MIXED_EXPECTED = [
    (1, "<row>", "invalid_json"),
    (2, "question", "non_utf8"),
    (3, "question", "empty_prompt"),
    (4, "question", "missing_field"),
    (5, "question", "too_long"),
    (7, "prompt_id", "duplicate"),
    (10, "<row>", "not_an_object"),
]

CHAT_ROWS = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]},  # 0 valid
    {"messages": [{"role": "bot", "content": "hello"}, {"role": "user", "content": "x"}]},          # 1 bad role
    {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},        # 2 last not user
    {"messages": "What is 1 + 1?"},                                                                  # 3 not a list
    {"messages": [{"role": "user"}]},                                                                # 4 no content
    {"messages": [{"role": "user", "content": "Second?"}]},                                         # 5 valid
    {"messages": [{"role": "user", "content": "Second?"}]},                                         # 6 duplicate of 5
    {"messages": []},                                                                                # 7 empty
]
CHAT_EXPECTED = [
    (1, "messages", "unknown_role"),
    (2, "messages", "last_not_user"),
    (3, "messages", "bad_messages"),
    (4, "messages", "bad_messages"),
    (6, "prompt_id", "duplicate"),
    (7, "messages", "empty_prompt"),
]


def _write_lines(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"\n".join(lines))
    return str(path)


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    return _write_lines(path, [json.dumps(r).encode() for r in rows])


def _ingest(**cfg) -> tuple[list, IngestReport]:
    report = IngestReport()
    return list(iter_prompts(PromptsConfig(**cfg), None, report)), report


def _triples(report: IngestReport) -> list[tuple[int, str, str]]:
    return [(e.row, e.field, e.kind) for e in report.errors]


def test_each_bad_jsonl_row_is_reported_with_row_and_field(tmp_path):
    path = _write_lines(tmp_path / "mixed.jsonl", MIXED_LINES)
    records, report = _ingest(path=path, fields={"prompt": "question", "reference": "answer", "keep": ["id"]},
                              max_prompt_chars=100)
    assert [r.source_row for r in records] == [0, 6, 9, 11]
    assert [r.reference for r in records] == ["4", "8", "27.0", "x"]
    assert records[0].metadata == {"id": "7"} and records[3].metadata == {}
    assert records[0].messages[0].model_dump() == {"role": "user", "content": "What is 2 + 2?"}
    assert _triples(report) == MIXED_EXPECTED
    assert report.counts() == {"rows_read": 11, "valid": 4, "invalid": 6, "duplicates": 1}
    reasons = {e.row: e.reason for e in report.errors}
    assert "byte 0xe9 at byte offset 17 of the line" in reasons[2]
    assert f"byte {sum(len(l) + 1 for l in MIXED_LINES[:2]) + 17} of the file" in reasons[2]
    assert "200 characters, over prompts.max_prompt_chars=100" in reasons[5]
    assert "'question' is missing" in reasons[4] and "prompt" in reasons[4]
    assert reasons[7].startswith("duplicate of row 0")
    assert "invalid JSON" in reasons[1]


def test_chat_rows_are_validated(tmp_path):
    path = _write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    records, report = _ingest(path=path, fields={"messages": "messages"})
    assert [r.source_row for r in records] == [0, 5]
    assert [m.role for m in records[0].messages] == ["system", "user"]
    assert _triples(report) == CHAT_EXPECTED
    reasons = {e.row: e.reason for e in report.errors}
    assert "'bot'" in reasons[1] and "system, user, assistant" in reasons[1]
    assert "'assistant', not the user" in reasons[2]
    pid = records[1].prompt_id[:12]
    assert reasons[6] == f"duplicate of row 5 (same prompt_id {pid}…); the first occurrence is kept"


def test_missing_prompt_column_fails_upfront_with_did_you_mean(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"question": "a", "answer": "1"}])
    with pytest.raises(IngestError) as e:
        iter_prompts(PromptsConfig(path=path, fields={"prompt": "questoin"}), None, IngestReport())
    text = str(e.value)
    assert text.startswith("prompts.fields.prompt: column 'questoin' is not in")
    assert "question, answer" in text and "did you mean 'question'?" in text
    with pytest.raises(IngestError, match="prompts.fields.reference: column 'solution'"):
        iter_prompts(PromptsConfig(path=path, fields={"prompt": "question", "reference": "solution"}))
    with pytest.raises(IngestError, match=r"prompts.prompt_template: column 'topic'"):
        iter_prompts(PromptsConfig(path=path, fields={"prompt": "question"}, prompt_template="{topic}: {prompt}"))
    with pytest.raises(IngestError, match="positional field"):
        iter_prompts(PromptsConfig(path=path, fields={"prompt": "question"}, prompt_template="Q: {}"))


def test_missing_file_and_unknown_format_fail_upfront(tmp_path):
    with pytest.raises(IngestError, match=r"prompts.path: no file or folder at .*nope.jsonl"):
        iter_prompts(PromptsConfig(path=str(tmp_path / "nope.jsonl")))
    (tmp_path / "prompts.txt").write_text('{"prompt": "hi"}')
    with pytest.raises(IngestError, match="set prompts.format"):
        iter_prompts(PromptsConfig(path=str(tmp_path / "prompts.txt")))
    records, _ = _ingest(path=str(tmp_path / "prompts.txt"), format="jsonl")
    assert [r.messages[0].content for r in records] == ["hi"]


def test_template_and_system_prompt(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl", [
        {"question": "What is 2 + 2?", "topic": "arithmetic"},
        {"messages": [{"role": "system", "content": "Own system."}, {"role": "user", "content": "Why?"}],
         "topic": "chat"},
    ])
    template = "[{topic}] {prompt}\nPut the final answer in \\boxed{{}}."
    records, report = _ingest(path=path, fields={"prompt": "question"}, prompt_template=template,
                              system_prompt="You are a careful solver.", limit=1)
    assert [m.model_dump() for m in records[0].messages] == [
        {"role": "system", "content": "You are a careful solver."},
        {"role": "user", "content": "[arithmetic] What is 2 + 2?\nPut the final answer in \\boxed{}."},
    ]
    assert records[0].prompt_id == prompt_id_of(records[0].messages)
    assert report.rows_read == 1
    # A chat column keeps its own system message; the template rewrites the last user turn.
    chat, _ = _ingest(path=path, fields={"messages": "messages"}, prompt_template="{prompt} ({topic})",
                      system_prompt="ignored")
    assert [m.content for m in chat[0].messages] == ["Own system.", "Why? (chat)"]


def test_template_column_missing_in_one_row_is_a_row_error(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl", [{"question": "a", "topic": "x"}, {"question": "b"}])
    records, report = _ingest(path=path, fields={"prompt": "question"}, prompt_template="{topic}: {prompt}")
    assert [r.source_row for r in records] == [0]
    assert _triples(report) == [(1, "topic", "missing_field")]


def _parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None, row_group_size: int | None = None) -> str:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)
    return str(path)


def test_parquet_matches_jsonl_and_reports_rows_across_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_sources, "PARQUET_BATCH_ROWS", 2)
    rows = [{"question": f"What is {i} + {i}?", "answer": float(2 * i), "id": i} for i in range(7)]
    rows[3]["question"] = None   # null prompt
    rows[5]["question"] = rows[1]["question"]   # duplicate of row 1
    schema = pa.schema([("question", pa.string()), ("answer", pa.float64()), ("id", pa.int64())])
    cfg = {"fields": {"prompt": "question", "reference": "answer", "keep": ["id"]}}
    from_parquet, report = _ingest(path=_parquet(tmp_path / "p.parquet", rows, schema, row_group_size=3), **cfg)
    from_jsonl, _ = _ingest(path=_write_jsonl(tmp_path / "p.jsonl", rows), **cfg)
    assert [r.source_row for r in from_parquet] == [0, 1, 2, 4, 6]
    assert _triples(report) == [(3, "question", "empty_prompt"), (5, "prompt_id", "duplicate")]
    assert [r.model_dump() for r in from_parquet] == [r.model_dump() for r in from_jsonl]
    assert from_parquet[1].reference == "2.0" and from_parquet[1].metadata == {"id": "1"}


def test_parquet_messages_column(tmp_path):
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("messages", pa.list_(message)), ("answer", pa.string())])
    rows = CHAT_ROWS[:3] + CHAT_ROWS[5:]   # a Parquet list<struct> cannot hold rows 3-4's shapes
    for r in rows:
        r["answer"] = "42"
    path = _parquet(tmp_path / "chat.parquet", rows, schema)
    records, report = _ingest(path=path, fields={"messages": "messages", "reference": "answer"})
    assert [r.source_row for r in records] == [0, 3]
    assert [(e.row, e.kind) for e in report.errors] == [(1, "unknown_role"), (2, "last_not_user"),
                                                        (4, "duplicate"), (5, "empty_prompt")]
    jsonl, _ = _ingest(path=_write_jsonl(tmp_path / "chat.jsonl", [rows[0]]), fields={"messages": "messages"})
    assert records[0].prompt_id == jsonl[0].prompt_id


def test_parquet_missing_column_fails_upfront_and_folder_rows_run_on(tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    _parquet(folder / "part-0.parquet", [{"problem": "a"}, {"problem": "b"}])
    _parquet(folder / "part-1.parquet", [{"problem": "a"}, {"problem": ""}, {"problem": "c"}])
    (folder / "_SUCCESS").write_text("")
    with pytest.raises(IngestError, match=r"prompts.fields.prompt: column 'question' is not in .*columns: problem\)"):
        iter_prompts(PromptsConfig(path=str(folder), fields={"prompt": "question"}))
    records, report = _ingest(path=str(folder), fields={"prompt": "problem"})
    assert [r.source_row for r in records] == [0, 1, 4]
    assert [(e.row, e.kind, e.file) for e in report.errors] == [(2, "duplicate", "part-1.parquet"),
                                                                 (3, "empty_prompt", "part-1.parquet")]
    assert report.errors[0].reason.startswith("duplicate of row 0")


def test_gzip_jsonl_with_bom(tmp_path):
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress(b'\xef\xbb\xbf{"prompt": "first"}\n{"prompt": "second"}\n'))
    records, report = _ingest(path=str(path))
    assert [r.messages[0].content for r in records] == ["first", "second"] and not report.errors


def test_lone_surrogate_escape_is_rejected(tmp_path):
    path = _write_lines(tmp_path / "s.jsonl", [b'{"prompt": "bad \\ud800 half"}', b'{"prompt": "ok"}'])
    records, report = _ingest(path=path)
    assert [r.source_row for r in records] == [1]
    assert _triples(report) == [(0, "prompt", "non_utf8")] and "\\ud800" in report.errors[0].reason


def test_report_write_and_summary(tmp_path):
    path = _write_lines(tmp_path / "mixed.jsonl", MIXED_LINES)
    report = IngestReport()
    list(iter_prompts(PromptsConfig(path=path, fields={"prompt": "question"}, max_prompt_chars=100), None, report))
    out = tmp_path / "run"
    assert report.write(None, str(out)) == str(out / "errors" / "ingest.jsonl")
    lines = [json.loads(l) for l in (out / "errors" / "ingest.jsonl").read_text().splitlines()]
    assert [(d["row"], d["field"], d["kind"]) for d in lines] == MIXED_EXPECTED
    assert set(lines[0]) == {"row", "field", "reason", "kind", "file"}
    summary = json.loads((out / "errors" / "ingest_summary.json").read_text())
    assert summary["valid"] == 4 and summary["by_kind"]["duplicate"] == 1 and summary["source"] == path
    text = report.summary()
    assert text.splitlines()[0].endswith("11 rows read, 4 valid, 6 invalid, 1 duplicates")
    assert "row 1 [<row>]: invalid JSON" in text and "1 more invalid rows" in text


def test_report_caps_listed_errors_but_counts_all():
    report = IngestReport(max_errors=2)
    for row in range(5):
        report.add(RowError(row, "prompt_id", "duplicate of row 0", "duplicate"))
    assert report.duplicates == 5 and len(report.errors) == 2 and report.errors_not_kept == 3
    assert "3 errors counted but not listed" in report.summary()


@pytest.mark.slow  # writes and ingests 200k rows (~180 MB): tens of seconds of CPU
def test_streaming_200k_rows_keeps_memory_well_below_file_size(tmp_path):
    """Peak RSS growth while ingesting a ~180 MB JSONL stays a fraction of the file (only prompt ids are kept)."""
    path = tmp_path / "big.jsonl"
    pad = "x" * 400
    with path.open("w") as f:
        for i in range(200_000):
            f.write(json.dumps({"prompt": f"Question {i}: what is {i} + {i}? {pad}", "answer": str(2 * i),
                                "solution": pad}) + "\n")
    size = path.stat().st_size
    script = textwrap.dedent(f"""
        import json, resource
        from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts
        from potstill.schemas.generation import PromptsConfig
        list(iter_prompts(PromptsConfig(path={str(path)!r}, limit=100, fields={{"reference": "answer"}})))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report = IngestReport()
        count = sum(1 for _ in iter_prompts(PromptsConfig(path={str(path)!r}, fields={{"reference": "answer"}}),
                                            None, report))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"count": count, "growth": (after - before) * 1024, "counts": report.counts()}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout)
    assert result["count"] == 200_000 and result["counts"]["invalid"] == 0
    assert size > 150e6
    assert result["growth"] < size / 3, f"peak RSS grew {result['growth'] / 1e6:.0f} MB for a {size / 1e6:.0f} MB file"


@pytest.mark.parametrize("name, fields, rows", [
    ("gsm8k_train_2000.jsonl", {"prompt": "question", "reference": "answer"}, 2000),
    ("aime24.jsonl", {"prompt": "problem", "reference": "answer", "keep": ["id"]}, 30),
    ("amc23.jsonl", {"prompt": "question", "reference": "answer", "keep": ["id", "url"]}, 40),
])
def test_real_datasets(name, fields, rows):
    records, report = _ingest(path=str(DATA / name), fields=fields,
                              prompt_template="{prompt}\nPut the final answer in \\boxed{{}}.")
    assert report.rows_read == rows and report.invalid == 0
    assert len(records) + report.duplicates == rows
    assert all(r.messages[-1].role == "user" and r.messages[-1].content.endswith("\\boxed{}.") for r in records)
    assert len({r.prompt_id for r in records}) == len(records)
    first = json.loads((DATA / name).open().readline())
    assert records[0].messages[0].content.startswith(first[fields["prompt"]])
    if name.startswith("gsm8k"):
        assert records[0].reference.endswith("#### 72")
    elif name.startswith("aime"):
        assert records[0].reference == "204" and records[0].metadata == {"id": "60"}
    else:
        assert records[0].reference == "27.0" and records[0].metadata["id"] == "0"


def test_arithmetic_prompts():
    from potstill.pipelines.arithmetic import problems as arithmetic

    records, report = _ingest(arithmetic={"count": 20, "digits": 3, "seed": 7}, system_prompt="Add.")
    problems = arithmetic.fresh_problems(20, 3, 7)
    assert report.counts() == {"rows_read": 20, "valid": 20, "invalid": 0, "duplicates": 0}
    assert [(r.messages[1].content, r.reference) for r in records] == problems
    assert records[0].messages[0].content == "Add." and report.source.startswith("arithmetic(count=20")


def test_parquet_invalid_utf8_cell_names_row_and_column(tmp_path):
    offsets = pa.array([0, 2, 6, 10], type=pa.int32()).buffers()[1]
    unchecked = pa.Array.from_buffers(pa.string(), 3, [None, offsets, pa.py_buffer(b"okcaf\xe9fine")])
    pq.write_table(pa.table({"prompt": unchecked}), tmp_path / "bad.parquet")
    records, report = _ingest(path=str(tmp_path / "bad.parquet"))
    assert [r.messages[0].content for r in records] == ["ok", "fine"]
    assert _triples(report) == [(1, "prompt", "non_utf8")]


def test_report_writes_through_storage_and_fsspec(tmp_path):
    import fsspec

    from potstill.pipelines.output.storage import Storage

    report = IngestReport(source="x.jsonl")
    report.add(RowError(3, "question", "empty prompt; fill the text in or drop the row", "empty_prompt"))
    written = report.write(Storage(str(tmp_path / "a")))
    assert written == str(tmp_path / "a" / "errors" / "ingest.jsonl")
    report.write(fsspec.filesystem("file"), str(tmp_path / "b"))
    for root in ("a", "b"):
        line = json.loads((tmp_path / root / "errors" / "ingest.jsonl").read_text())
        assert line == {"row": 3, "field": "question", "reason": "empty prompt; fill the text in or drop the row",
                        "kind": "empty_prompt", "file": None}
    with pytest.raises(TypeError, match="pass the output root"):
        report.write(None)


def test_per_prompt_max_tokens_column(tmp_path):
    from potstill.pipelines.ingest.prompts import iter_prompts
    from potstill.pipelines.ingest.report import IngestReport
    from potstill.schemas.generation import PromptsConfig

    src = tmp_path / "budget.jsonl"
    src.write_text('{"prompt": "a", "max_tokens": 16}\n{"prompt": "b", "max_tokens": 0}\n{"prompt": "c", "max_tokens": 512}\n')
    report = IngestReport()
    cfg = PromptsConfig(path=str(src), fields={"prompt": "prompt", "max_tokens": "max_tokens"})
    records = list(iter_prompts(cfg, None, report))
    assert [r.max_tokens for r in records] == [16, 512]
    assert report.errors[0].row == 1 and report.errors[0].field == "max_tokens"


def test_prompt_ids_are_the_sha256_of_json_dumps_canonical_form_for_any_text():
    """A prompt's id names it in every committed run: the direct encoder must give json.dumps' bytes exactly,
    quotes, backslashes, control characters, non-ASCII and astral characters included."""
    import hashlib
    import random

    from potstill.schemas.prompt import Message

    rng = random.Random(7)
    alphabet = ['"', "\\", "\n", "\t", "\x00", "\x1f", "\x7f", "/", "é", "字", "\u2028", "😀", "a", " ", "{", "}"]
    for _ in range(500):
        messages = [{"role": rng.choice(["system", "user", "assistant"]),
                     "content": "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))}
                    for _ in range(rng.randint(1, 3))]
        canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        assert prompt_id_of(messages) == expected, messages
        assert prompt_id_of([Message(**m) for m in messages]) == expected
    # Pinned: the id of a simple prompt never changes between releases.
    assert prompt_id_of([{"role": "user", "content": "What is 2 + 2?"}]) == hashlib.sha256(
        b'[{"content":"What is 2 + 2?","role":"user"}]').hexdigest()
