"""The compact top-k format (trace layout 2): exact to 1/32 nat, sorted per token, nulls and ragged tokens kept,
layout-1 tables re-encoded by the writer, and far fewer bytes than float16 in Parquet."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potstill.pipelines.output.shard_writer import encoding_options
from potstill.pipelines.output.topk_codec import (SCALE, decode_codes, decode_logprob_rows, encode_topk_columns,
                                                  encode_values, is_compact)


def test_round_trip_sorts_each_token_and_is_exact_to_half_a_code() -> None:
    rng = np.random.default_rng(0)
    per_token = rng.integers(0, 6, 500)
    ids = rng.integers(0, 150_000, int(per_token.sum()))
    lps = -rng.exponential(3.0, int(per_token.sum()))
    codes_ids, codes = encode_values(ids, lps, per_token)
    decoded = decode_codes(codes, per_token)
    start = 0
    for n in per_token:
        want = sorted(zip(lps[start:start + n], ids[start:start + n]), reverse=True)
        got = list(zip(decoded[start:start + n], codes_ids[start:start + n]))
        assert [i for _, i in got] == [i for _, i in want]
        for (g, _), (w, _) in zip(got, want):
            assert abs(g - max(w, -255 / SCALE)) <= 0.5 / SCALE + 1e-6
        start += n


def test_columns_keep_nulls_and_ragged_tokens() -> None:
    ids, lps = encode_topk_columns([[[1, 4], [5, 2]], None, [[9]], []], [[[-0.1, -2.5], [-3.0, -0.2]], None, [[-1.0]], []])
    assert ids.type == pa.list_(pa.list_(pa.int32())) and is_compact(lps.type)
    assert ids.to_pylist() == [[[1, 4], [2, 5]], None, [[9]], []]
    assert decode_logprob_rows(lps) == [[[-0.125, -2.5], [-0.1875, -3.0]], None, [[-1.0]], []]
    with pytest.raises(ValueError, match="both be set or both be null"):
        encode_topk_columns([[[1]], None], [[[-1.0]], [[-1.0]]])
    with pytest.raises(ValueError, match="differ in shape"):
        encode_topk_columns([[[1, 2]]], [[[-1.0]]])


def test_compact_layout_takes_far_fewer_parquet_bytes_than_float16() -> None:
    rng = np.random.default_rng(1)
    tokens, k = 4000, 20
    ids = rng.zipf(1.3, (tokens, k)) % 151_936
    lps = np.sort(-rng.exponential(2.0, (tokens, k)), axis=1)[:, ::-1]
    rows_ids = [ids[i:i + 200].tolist() for i in range(0, tokens, 200)]
    rows_lps = [lps[i:i + 200].tolist() for i in range(0, tokens, 200)]

    def size(table: pa.Table, **kw) -> int:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", compression_level=3, **kw)
        return len(buf.getvalue())

    v1 = pa.table({"topk_ids": pa.array(rows_ids, pa.list_(pa.list_(pa.int32()))),
                   "topk_logprobs": pa.array(rows_lps, pa.list_(pa.list_(pa.float16())))})
    a, b = encode_topk_columns(rows_ids, rows_lps)
    v2 = pa.table({"topk_ids": a, "topk_logprobs": b})
    compact = size(v2, **encoding_options(v2.schema)) / tokens
    assert compact <= 64 and compact < 0.7 * size(v1) / tokens


def test_a_run_written_in_layout_1_still_reads_with_log_probabilities(tmp_path) -> None:
    """Old runs load: rewrite a (live) run as the float16 layout, its data files and commits saying so."""
    import json as _json
    from pathlib import Path

    import potstill
    from potstill.pipelines.output.storage import Storage
    from potstill.schemas.trace import trace_arrow_schema, trace_schema_hash
    from tests.unit.output.committed_runs import make_run

    root = make_run(tmp_path / "r", "r", prompts=4, n=1, killed_attempt=False, finalize=False)
    store = Storage(root)
    for path in Path(root, "data").rglob("*.parquet"):
        table = pq.read_table(path)
        rows = table.to_pylist()
        for r, lps in zip(rows, decode_logprob_rows(table.column("topk_logprobs"))):
            r["topk_logprobs"], r["schema_version"] = lps, 1
        pq.write_table(pa.Table.from_pylist(rows, schema=trace_arrow_schema(1)), path)
    for name in store.list("commits"):
        record = _json.loads(store.read_bytes(name))
        record["schema_hash"] = trace_schema_hash(1)
        Path(store.path(name)).write_text(_json.dumps(record))
    runs = potstill.read_run(root)
    assert runs.runs[0].schema_version == 1
    table = runs.to_table(["topk_ids", "topk_logprobs"])
    assert table.schema.field("topk_logprobs").type == pa.list_(pa.list_(pa.float32()))
    assert table.column("topk_logprobs").to_pylist()[0][0] == [pytest.approx(-0.125, abs=1e-3), -2.0]
    assert runs.dataset.to_table(columns=["topk_logprobs"]).num_rows == 4  # the stored layout, as is
