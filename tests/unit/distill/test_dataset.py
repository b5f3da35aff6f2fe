"""The dataset side of the job: row filters, one-group filter+tokenize+pack, run metadata, and the
up-front KD checks (clear errors before any worker starts)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from potstill.pipelines.arithmetic import problems as arithmetic
from potstill.pipelines.arithmetic import teacher_build
from potstill.pipelines.distill.dataset import TraceSource, pack_traces, trace_sources
from potstill.pipelines.distill.packing import packing_efficiency
from potstill.pipelines.jobs.run_training import plan_tokenization, steps_per_epoch
from potstill.schemas.generation import StorageConfig
from potstill.schemas.training import TraceDataConfig, TrainingConfig


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    teacher_build.save_tokenizer(teacher_build.build_tokenizer(), out)
    return out


def _table(teacher_dir: Path, n: int = 40, topk: int = 3, layout: int = 2):
    """Trace rows as the shard writer stores them (`layout` 2), or as shards of layout 1 did (float16 top-k)."""
    import pyarrow as pa
    from transformers import AutoTokenizer

    from potstill.pipelines.output.shard_writer import records_to_table
    from potstill.schemas.trace import TraceRecord, trace_arrow_schema

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    rows = []
    for i in range(n):
        a, b = 100 + i, 200 + 3 * i
        ids = tok.encode(arithmetic.completion_text(a, b) + teacher_build.END, add_special_tokens=False)
        rows.append(TraceRecord(
            run_id="r", shard_id="s", prompt_id=f"p{i}", sample_index=0,
            messages=[{"role": "user", "content": arithmetic.question_text(a, b)}], completion=arithmetic.completion_text(a, b),
            answer=str(a + b), finish_reason="length" if i % 5 == 0 else "stop", prompt_tokens=20,
            completion_tokens=len(ids) + (100 if i % 7 == 0 else 0), completion_token_ids=ids,
            topk_ids=[[t, 7, 8][:topk] for t in ids], topk_logprobs=[[-0.1, -3.0, -4.0][:topk] for _ in ids],
            verified=None if i % 4 == 0 else i % 3 != 0, teacher_model=str(teacher_dir),
            sampling=json.dumps({"logprobs": topk}), created_at=datetime.now(timezone.utc),
        ).model_dump())
    if layout == 1:
        return pa.Table.from_pylist([r | {"schema_version": 1} for r in rows], schema=trace_arrow_schema(1))
    return records_to_table(rows)


def _expected_kept(n: int, data: TraceDataConfig, limit: int | None = None) -> int:
    keep = 0
    for i in range(n):
        verified = None if i % 4 == 0 else i % 3 != 0
        ok = (not data.verified_only or verified is True) and (not data.require_stop or i % 5 != 0)
        keep += ok and (limit is None or i % 7 != 0)
    return keep


@pytest.mark.parametrize("data_kwargs", [{}, {"verified_only": False}, {"require_stop": False, "max_completion_tokens": 150}])
def test_pack_traces_filters_then_packs_every_kept_trace(teacher_dir: Path, data_kwargs: dict) -> None:
    data = TraceDataConfig(runs=["x"], **data_kwargs)
    out = pack_traces(_table(teacher_dir), data.model_dump(mode="json"), str(teacher_dir), use_teacher_ids=True,
                      topk_width=3, max_tokens=512, packing_enabled=True)
    assert int(out["num_docs"].sum()) == _expected_kept(40, data, data.max_completion_tokens)
    assert out["input_ids"].shape[1] == 512 and out["topk_ids"].shape[1:] == (512, 3)
    assert ((out["topk_ids"][..., 0] >= 0) == (out["labels"] >= 0)).all()  # every completion token has teacher top-k
    assert packing_efficiency(out) > 0.6  # few traces here; the efficiency test uses realistic counts


def test_shards_of_layout_1_and_2_pack_to_the_same_rows(teacher_dir: Path) -> None:
    """Old shards (float16 top-k log-probabilities) still load; the compact codes decode to within 1/32 nat."""
    import numpy as np

    data = TraceDataConfig(runs=["x"]).model_dump(mode="json")
    old, new = (pack_traces(_table(teacher_dir, layout=v), data, str(teacher_dir), use_teacher_ids=True, topk_width=3,
                            max_tokens=512, packing_enabled=True) for v in (1, 2))
    assert old.keys() == new.keys()
    for key in ("input_ids", "labels", "position_ids", "num_tokens"):
        assert np.array_equal(old[key], new[key]), key
    assert np.array_equal(old["topk_ids"], new["topk_ids"])  # the rows here are already sorted by log-probability
    assert np.abs(old["topk_logprobs"].astype(np.float32) - new["topk_logprobs"].astype(np.float32)).max() <= 1 / 32


def test_trace_sources_read_one_file_per_run_and_its_layout(teacher_dir: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from potstill.pipelines.jobs.train_dataset import split_by_format

    files = []
    for run, topk, layout in (("a", 3, 2), ("b", 2, 1)):
        for shard in ("s0", "s1"):
            path = tmp_path / run / "data" / shard / "x.parquet"
            path.parent.mkdir(parents=True)
            pq.write_table(_table(teacher_dir, n=2, topk=topk, layout=layout), path)
            files.append(str(path))
    sources = trace_sources(files, StorageConfig())
    assert [(Path(s.run).name, s.topk_width, s.teacher_model, s.layout) for s in sources] == \
        [("a", 3, str(teacher_dir), 2), ("b", 2, str(teacher_dir), 1)]
    assert split_by_format(files, sources) == [files[2:], files[:2]]  # one Ray Data read per layout


def _cfg(**kw) -> TrainingConfig:
    return TrainingConfig.model_validate({"name": "t", "data": {"runs": ["x"]}} | kw)


def test_plan_uses_teacher_ids_when_the_student_shares_the_tokenizer(teacher_dir: Path) -> None:
    src = [TraceSource("r", str(teacher_dir), 5)]
    assert plan_tokenization(_cfg(loss={"kd_weight": 1.0}), src) == (str(teacher_dir), True, 5)
    assert plan_tokenization(_cfg(), src) == (str(teacher_dir), True, 0)  # SFT only: no top-k loaded


def test_plan_errors_name_the_key_problem_and_fix(teacher_dir: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    with pytest.raises(ValueError, match=r"loss.kd_weight=1.0 but the traces carry no teacher top-k.*sampling.logprobs: 20"):
        plan_tokenization(_cfg(loss={"kd_weight": 1.0}), [TraceSource("r", str(teacher_dir), 0)])
    with pytest.raises(ValueError, match=r"several teachers.*set student.tokenizer"):
        plan_tokenization(_cfg(), [TraceSource("r", "t1", 0), TraceSource("s", "t2", 0)])
    other = tmp_path / "other"
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")),
                            chat_template="{{ messages[0]['content'] }}").save_pretrained(other)
    src = [TraceSource("r", str(teacher_dir), 5)]
    with pytest.raises(ValueError, match=r"loss.kd_weight=0.5 needs the student to share the teacher's tokenizer"):
        plan_tokenization(_cfg(student={"tokenizer": str(other)}, loss={"kd_weight": 0.5}), src)
    assert plan_tokenization(_cfg(student={"tokenizer": str(other)}), src) == (str(other), False, 0)


def test_steps_per_epoch_cover_every_row_the_last_step_short() -> None:
    assert steps_per_epoch(rows=69, global_batch=16) == 5  # 4 steps of 16 rows, one of 5
    assert steps_per_epoch(rows=1, global_batch=8) == 1


def test_global_batch_size_sets_gradient_accumulation_per_worker_count() -> None:
    cfg = _cfg(run={"micro_batch_size": 2, "global_batch_size": 8}, scaling={"num_workers": 2})
    assert (cfg.grad_accum(), cfg.grad_accum(1), cfg.grad_accum(4), cfg.global_batch(1)) == (2, 4, 1, 8)
    with pytest.raises(ValueError, match=r"run.global_batch_size \(6\) is not a multiple of run.micro_batch_size \(2\) x "
                                         r"scaling.num_workers \(2\)"):
        _cfg(run={"micro_batch_size": 2, "global_batch_size": 6}, scaling={"num_workers": 2})
    with pytest.raises(ValueError, match="global_batch_size .* and grad_accum_steps .* both set the step size"):
        _cfg(run={"global_batch_size": 8, "grad_accum_steps": 2})


def test_s3_training_reads_and_checkpoints_go_through_the_one_retrying_stack() -> None:
    import pickle

    from potstill.pipelines.distill.dataset import arrow_filesystem
    from potstill.schemas.generation import StorageConfig

    cfg = StorageConfig(endpoint_url="http://127.0.0.1:9", region="eu-west-1", max_retries=5)
    assert arrow_filesystem("runs/local", cfg) is None
    fs = arrow_filesystem("s3://bucket/run/data/a.parquet", cfg)
    inner = fs.handler.fs
    assert type(inner).__name__ == "RetryingS3FileSystem" and inner.retry_policy.max_retries == 5
    assert inner.client_kwargs == {"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-1"}
    assert arrow_filesystem("s3://bucket/run/data/b.parquet", cfg) is fs  # one client per process and config
    # Ray Train ships RunConfig.storage_filesystem to its workers: the policy must survive pickling.
    copy = pickle.loads(pickle.dumps(fs)).handler.fs
    assert type(copy).__name__ == "RetryingS3FileSystem" and copy.retry_policy.max_retries == 5
