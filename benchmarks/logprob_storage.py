"""Teacher top-k log-probability storage: bytes per token of the compact format (trace layout 2) against float16
storage (layout 1), and the KD student's accuracy with each. Prints one JSON object of same-run measurements.

    .venv/bin/python benchmarks/logprob_storage.py [--problems 2000] [--epochs 15] [--quick]

- `bytes_per_token`: Parquet bytes (zstd level 3, the shard writer's default) of the `topk_ids` and
  `topk_logprobs` column chunks per completion token, at k = 4, 20 and 64, for
  - `arithmetic`: a real run of the shipped teacher in vLLM (`sampling.logprobs: 64`; the top-4 and
    top-20 are the first entries of each token's top-64, exactly what vLLM returns for those k).
    Its vocabulary has 104 tokens, so ids are small;
  - `synthetic_150k`: 4,000 tokens of teacher distributions over a 151,936-token vocabulary (the size of
    Qwen2.5's): log-frequency prior over the ids (BPE ids rise as frequency falls) plus Gumbel noise, at a
    per-token sharpness drawn log-uniformly, so some tokens are confident and some flat.
  Goal: compact <= 64 B/token at k = 20.
- `kd_accuracy`: two students trained with the KD loss only (the demo's student and schedule, `--epochs`
  epochs) on the same traces at k = 20, one from compact shards, one from float16 shards (same seed, same
  steps), scored in vLLM on the same fresh held-out problems. Goal: within 1 point.

`--quick` skips the two trainings.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WIDTHS = (4, 20, 64)
VOCAB = 151_936
TOPK_COLUMNS = ("topk_ids", "topk_logprobs")


def truncated(rows: list[dict], k: int) -> list[dict]:
    """Trace rows with each token's top-k cut to the first k entries (sorted by log-probability) and the sampling
    JSON saying `logprobs: k`."""
    out = []
    for r in rows:
        r = dict(r)
        if r.get("topk_ids") is not None:
            r["topk_ids"] = [t[:k] for t in r["topk_ids"]]
            r["topk_logprobs"] = [t[:k] for t in r["topk_logprobs"]]
        r["sampling"] = json.dumps({**json.loads(r["sampling"]), "logprobs": k}, sort_keys=True)
        out.append(r)
    return out


def tables(rows: list[dict]) -> dict[int, object]:
    """{layout: table} of the same rows in trace layout 1 (float16 log-probabilities) and 2 (compact)."""
    import pyarrow as pa

    from potstill.pipelines.output.shard_writer import records_to_table
    from potstill.schemas.trace import TraceRecord, trace_arrow_schema

    defaults = {n: i.default for n, i in TraceRecord.model_fields.items() if not i.is_required()}
    return {1: pa.Table.from_pylist([defaults | r | {"schema_version": 1} for r in rows], schema=trace_arrow_schema(1)),
            2: records_to_table(rows)}


def write_parquet(table, sink) -> None:
    """Write `table` the way the shard writer does (zstd 3; layout 2 with its column encodings)."""
    import pyarrow.parquet as pq

    from potstill.pipelines.output.shard_writer import encoding_options
    from potstill.pipelines.output.topk_codec import is_compact

    compact = is_compact(table.schema.field("topk_logprobs").type)
    pq.write_table(table, sink, compression="zstd", compression_level=3, **(encoding_options(table.schema) if compact else {}))


def topk_bytes_per_token(table, tokens: int) -> float:
    """Compressed bytes of the top-k column chunks of `table` written as a shard, per completion token."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    write_parquet(table, buf)
    meta = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata
    total = 0
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(g).column(c)
            if col.path_in_schema.split(".")[0] in TOPK_COLUMNS:
                total += col.total_compressed_size
    return total / tokens


def sizes(rows: list[dict]) -> dict[str, dict[str, float]]:
    tokens = sum(len(r["topk_ids"]) for r in rows if r.get("topk_ids") is not None)
    out = {}
    for k in WIDTHS:
        t = tables(truncated(rows, k))
        out[f"k{k}"] = {"float16": round(topk_bytes_per_token(t[1], tokens), 2),
                        "compact": round(topk_bytes_per_token(t[2], tokens), 2)}
    return out


def synthetic_rows(tokens: int = 4000, per_row: int = 200, seed: int = 0) -> list[dict]:
    """Trace rows whose top-64 come from synthetic 151,936-token distributions (see module docstring)."""
    from datetime import datetime, timezone

    rng = np.random.default_rng(seed)
    prior = -1.1 * np.log(np.arange(1, VOCAB + 1))
    ids_all, lps_all = [], []
    for start in range(0, tokens, 250):
        n = min(250, tokens - start)
        sharp = np.exp(rng.uniform(np.log(0.5), np.log(6.0), size=(n, 1)))
        z = (prior[None, :] + rng.gumbel(size=(n, VOCAB))) * sharp
        top = np.argpartition(-z, 64, axis=1)[:, :64]
        zt = np.take_along_axis(z, top, 1)
        m = z.max(1, keepdims=True)
        lse = np.log(np.exp(z - m).sum(1, keepdims=True)) + m
        order = np.argsort(-(zt - lse), 1)
        ids_all.append(np.take_along_axis(top, order, 1))
        lps_all.append(np.take_along_axis(zt - lse, order, 1))
    ids, lps = np.concatenate(ids_all), np.concatenate(lps_all)
    rows = []
    for i, s in enumerate(range(0, tokens, per_row)):
        n = min(per_row, tokens - s)
        rows.append({"run_id": "synthetic", "shard_id": "s0", "prompt_id": f"{i:064x}", "sample_index": 0,
                     "messages": [{"role": "user", "content": "q"}], "completion": "c", "answer": "a",
                     "finish_reason": "stop", "prompt_tokens": 10, "completion_tokens": n,
                     "completion_token_ids": ids[s:s + n, 0].tolist(), "topk_ids": ids[s:s + n].tolist(),
                     "topk_logprobs": lps[s:s + n].tolist(), "teacher_model": "synthetic",
                     "sampling": json.dumps({"logprobs": 64}), "created_at": datetime.now(timezone.utc)})
    return rows


def generate(out: Path, problems: int) -> list[str]:
    from potstill.pipelines.jobs.run_generation import run_generation
    from potstill.pipelines.output.commit import committed_data_files
    from potstill.schemas import GenerationConfig, load_config

    cfg = load_config(REPO / "examples" / "arithmetic.yaml", GenerationConfig, {
        "output.uri": str(out), "prompts.arithmetic.count": problems, "sampling.n": 1, "sampling.logprobs": 64})
    run_generation(cfg)
    return committed_data_files(str(out))


def read_rows(files: list[str]) -> list[dict]:
    """Committed trace rows with decoded per-token log-probabilities (whatever layout they were written in)."""
    import pyarrow.parquet as pq

    from potstill.pipelines.output.topk_codec import decode_logprob_rows

    rows = []
    for f in files:
        table = pq.read_table(f)
        decoded = decode_logprob_rows(table.column("topk_logprobs"))
        for r, lps in zip(table.to_pylist(), decoded):
            r["topk_logprobs"] = lps
            rows.append(r)
    return rows


def kd_accuracy(rows: list[dict], work: Path, epochs: int, eval_problems: int) -> dict:
    """KD-only students from compact and float16 shards of the same k = 20 traces, scored alike."""
    from potstill.pipelines.jobs.evaluate import evaluate, load_eval_prompts
    from potstill.pipelines.jobs.run_training import run_training
    from potstill.schemas import load_config
    from potstill.schemas.training import TrainingConfig

    k20 = tables(truncated(rows, 20))
    result: dict = {"k": 20, "epochs": epochs}
    questions = {r["messages"][-1]["content"] for r in rows}
    problems = load_eval_prompts(f"arithmetic:{eval_problems}", exclude=questions)
    for layout, name in ((2, "compact"), (1, "float16")):
        path = work / name / "data" / "s0" / "traces.parquet"
        path.parent.mkdir(parents=True)
        write_parquet(k20[layout], str(path))
        cfg = load_config(REPO / "examples" / "distill_arithmetic.yaml", TrainingConfig, {
            "name": f"kd-{name}", "data.runs": [str(work / name)], "checkpoint.storage_path": str(work / "ckpt"),
            "run.epochs": epochs, "loss.sft_weight": 0.0, "loss.kd_weight": 1.0})
        summary = run_training(cfg, data_files=[str(path)])
        scored = evaluate(summary["student"], problems)
        result[f"steps_{name}"] = summary["steps"]
        result[f"student_acc_{name}"] = scored["accuracy"]
        print(f"[bench] KD from {name} shards: {scored['accuracy']:.3f} after {summary['steps']} steps",
              file=sys.stderr, flush=True)
    result["acc_difference_points"] = round(100 * (result["student_acc_compact"] - result["student_acc_float16"]), 2)
    result["eval_problems"] = len(problems)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=2000, help="Arithmetic problems in the generation run.")
    parser.add_argument("--epochs", type=int, default=15, help="Epochs of each KD student (the demo's: 15).")
    parser.add_argument("--eval-problems", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="Bytes per token only, no trainings.")
    args = parser.parse_args(argv)

    from potstill.cluster.connect import ensure_ray
    from potstill.pipelines.jobs.run_training import local_cpus, quiet_ray_data

    work = Path(tempfile.mkdtemp(prefix="potstill-logprobs-"))
    ensure_ray(None, local_cpus(2, 1), dashboard=True)
    quiet_ray_data()
    rows = [r for r in read_rows(generate(work / "traces", args.problems)) if r.get("topk_ids") is not None]
    if not rows:
        raise SystemExit(f"the generation run in {work / 'traces'} produced no trace with top-k logprobs; see its "
                         "manifest.json `failed` for why")
    result = {
        "bytes_per_token": {"arithmetic": sizes(rows), "synthetic_150k": sizes(synthetic_rows())},
        "arithmetic_completion_tokens": sum(len(r["topk_ids"]) for r in rows),
    }
    print(f"[bench] bytes per token {result['bytes_per_token']}", file=sys.stderr, flush=True)
    if not args.quick:
        result["kd_accuracy"] = kd_accuracy(rows, work / "kd", args.epochs, args.eval_problems)
    result["machine"] = {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
