"""The compact on-disk format of the teacher's top-k log-probabilities (trace schema version 2).

    ids, codes = encode_topk_columns(rows_ids, rows_logprobs)      # list<list<int32>>, list<list<uint8>> arrays
    lps = decode_logprobs(codes_values, tokens_of_values)           # float32 log-probabilities, per value

Per completion token, the top-k entries are sorted by log-probability
(highest first). `topk_ids` keeps the ids as `list<list<int32>>` and is written
with Parquet's BYTE_STREAM_SPLIT encoding (the bytes of each id in separate
streams, which zstd compresses far better than interleaved int32).
`topk_logprobs` holds uint8 codes: the log-probability quantized to
1/`SCALE` nat, q = min(255, round(-logprob * SCALE)), stored as the difference
to the previous entry's q of the same token (sorted entries make it >= 0 and
mostly small; the first entry holds its q). Decoding is a running sum per
token: logprob = -q / SCALE, exact to 1/(2 * SCALE) nat down to -255 / SCALE
(lower ones, probabilities below 1e-7, read as -255 / SCALE). Schema version 1
shards (float16 log-probabilities in the teacher's order) still load: readers
branch on the column's value type.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

SCALE = 16
"""Codes per nat."""
MAX_CODE = 255
IDS_COLUMN = "topk_ids"
LOGPROBS_COLUMN = "topk_logprobs"
IDS_LEAF = "topk_ids.list.element.list.element"
"""Parquet path of the id values (for the BYTE_STREAM_SPLIT encoding)."""


def quantize(logprobs: np.ndarray) -> np.ndarray:
    """uint8-range codes (int64) of log-probabilities: round(-logprob * SCALE), clipped to [0, 255]."""
    return np.clip(np.rint(-np.asarray(logprobs, dtype=np.float64) * SCALE), 0, MAX_CODE).astype(np.int64)


def _token_starts(per_token: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(per_token)[:-1]]).astype(np.int64) if len(per_token) else np.zeros(0, np.int64)


def encode_values(ids: np.ndarray, logprobs: np.ndarray, per_token: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32, delta codes uint8) of flat top-k values, `per_token[t]` entries for token t, each token's
    entries sorted by log-probability (highest first)."""
    token_of = np.repeat(np.arange(len(per_token)), per_token)
    order = np.lexsort((-np.asarray(logprobs, dtype=np.float64), token_of))  # by token, then logprob descending
    ids, q = np.asarray(ids)[order], quantize(np.asarray(logprobs)[order])
    deltas = np.diff(q, prepend=0)
    deltas[_token_starts(per_token)[per_token > 0]] = q[_token_starts(per_token)[per_token > 0]]
    return ids.astype(np.int32), deltas.astype(np.uint8)


def decode_codes(codes: np.ndarray, per_token: np.ndarray) -> np.ndarray:
    """float32 log-probabilities of flat delta codes, `per_token[t]` entries for token t (a running sum per token)."""
    codes = np.asarray(codes, dtype=np.int64)
    total = np.cumsum(codes)
    starts = _token_starts(per_token)
    before = np.where(starts > 0, total[np.maximum(starts - 1, 0)], 0) if len(total) else starts
    q = total - np.repeat(before, per_token)
    return (-q / SCALE).astype(np.float32)


def encode_topk_columns(
    ids_rows: Sequence[Sequence[Sequence[int]] | None], logprob_rows: Sequence[Sequence[Sequence[float]] | None],
) -> tuple["pa.Array", "pa.Array"]:
    """The `topk_ids` and `topk_logprobs` columns (list<list<int32>>, list<list<uint8>>) of trace rows whose top-k
    come as per-token lists (None: the row has none)."""
    import pyarrow as pa

    if len(ids_rows) != len(logprob_rows):
        raise ValueError(f"{len(ids_rows)} topk_ids rows but {len(logprob_rows)} topk_logprobs rows")
    valid = np.asarray([r is not None for r in ids_rows], dtype=bool)
    if not np.array_equal(valid, [r is not None for r in logprob_rows]):
        bad = int(np.nonzero(valid != np.asarray([r is not None for r in logprob_rows]))[0][0])
        raise ValueError(f"trace row {bad}: topk_ids and topk_logprobs must both be set or both be null")
    rows_ids = [r for r in ids_rows if r is not None]
    rows_lps = [r for r in logprob_rows if r is not None]
    tokens_per_row = np.fromiter((len(r) for r in ids_rows if r is not None), dtype=np.int64, count=len(rows_ids))
    tok_ids = list(chain.from_iterable(rows_ids))
    tok_lps = list(chain.from_iterable(rows_lps))
    per_token = np.fromiter((len(t) for t in tok_ids), dtype=np.int64, count=len(tok_ids))
    if not np.array_equal(per_token, np.fromiter((len(t) for t in tok_lps), dtype=np.int64, count=len(tok_lps))):
        raise ValueError("topk_ids and topk_logprobs differ in shape (tokens per row or entries per token); "
                         "every token needs one log-probability per id")
    flat_ids = np.fromiter(chain.from_iterable(tok_ids), dtype=np.int64, count=int(per_token.sum()))
    flat_lps = np.fromiter(chain.from_iterable(tok_lps), dtype=np.float64, count=int(per_token.sum()))
    ids, codes = encode_values(flat_ids, flat_lps, per_token)
    token_offsets = pa.array(np.concatenate([[0], np.cumsum(per_token)]).astype(np.int32))
    row_offsets_valid = np.concatenate([[0], np.cumsum(tokens_per_row)]).astype(np.int32)
    # Null rows: repeat the previous offset and mask them.
    row_offsets = np.zeros(len(ids_rows) + 1, dtype=np.int32)
    row_offsets[1:][valid] = row_offsets_valid[1:]
    row_offsets = np.maximum.accumulate(row_offsets)
    mask = pa.array(~valid) if not valid.all() else None
    inner_ids = pa.ListArray.from_arrays(token_offsets, pa.array(ids, pa.int32()))
    inner_codes = pa.ListArray.from_arrays(token_offsets, pa.array(codes, pa.uint8()))
    return (pa.ListArray.from_arrays(pa.array(row_offsets), inner_ids, mask=mask),
            pa.ListArray.from_arrays(pa.array(row_offsets), inner_codes, mask=mask))


def is_compact(logprobs_type: "pa.DataType") -> bool:
    """True for a schema-version-2 `topk_logprobs` column type (uint8 codes); False for version 1 (float16)."""
    import pyarrow as pa

    leaf = logprobs_type
    while pa.types.is_list(leaf) or pa.types.is_large_list(leaf):
        leaf = leaf.value_type
    return pa.types.is_uint8(leaf)


def reencode_v1(ids_column: Any, logprobs_column: Any) -> tuple["pa.Array", "pa.Array"]:
    """Version-1 columns (float16 log-probabilities in the teacher's order) in the compact version-2 format."""
    return encode_topk_columns(ids_column.to_pylist(), logprobs_column.to_pylist())


def decode_logprobs_column(column: Any) -> "pa.Array":
    """A `topk_logprobs` column of either layout as list<list<float32>> log-probabilities (nulls kept)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not is_compact(arr.type):
        return arr.cast(pa.list_(pa.list_(pa.float32())))
    inner = arr.flatten()
    per_token = pc.fill_null(pc.list_value_length(inner), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = decode_codes(inner.flatten().to_numpy(zero_copy_only=False), per_token)
    rows = pa.ListArray.from_arrays(arr.offsets, pa.ListArray.from_arrays(inner.offsets, pa.array(values, pa.float32())),
                                    mask=arr.is_null() if arr.null_count else None)
    return rows


def decode_logprob_rows(column: Any) -> list[list[list[float]] | None]:
    """Per row, per token, the log-probabilities of a `topk_logprobs` column of either version (for inspection)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not is_compact(arr.type):
        return arr.to_pylist()
    inner = arr.flatten()
    per_token = pc.fill_null(pc.list_value_length(inner), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    lps = decode_codes(inner.flatten().to_numpy(zero_copy_only=False), per_token)
    decoded = pa.ListArray.from_arrays(arr.offsets, pa.ListArray.from_arrays(inner.offsets, pa.array(lps)),
                                       mask=arr.is_null() if arr.null_count else None)
    return decoded.to_pylist()
