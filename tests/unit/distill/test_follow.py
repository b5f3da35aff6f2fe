"""Which files training reads (manifests of finished runs, commits of live ones), the per-worker reader,
and the live-run follower: rounds of newly committed shards, the end at `_SUCCESS`, resume by counting.

    .venv/bin/pytest tests/unit/test_distill_follow.py -q
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from potstill.pipelines.arithmetic import problems as arithmetic
from potstill.pipelines.arithmetic import teacher_build
from potstill.pipelines.output.commit import commit_shard, finalize_run
from potstill.pipelines.distill.follow import FollowSource
from potstill.pipelines.distill.local_reader import LocalReader, PackSpec, empty_batch
from potstill.pipelines.distill.run_data import CommitWatcher, TrainingDataError, finished_run_files
from potstill.pipelines.distill.train_loop import LoopState
from potstill.pipelines.output.shard_writer import write_shard
from potstill.pipelines.output.storage import Storage
from potstill.schemas.manifest import ShardStats
from potstill.schemas.training import TraceDataConfig

RUN = "run-f"
SHARDS = [f"{i:06d}-abc" for i in range(5)]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    teacher_build.save_tokenizer(teacher_build.build_tokenizer(), out)
    return out


def _rows(teacher_dir: Path, shard: int, n: int = 12) -> list[dict]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    rows = []
    for i in range(n):
        a, b = 100 + 37 * shard + i, 300 + 11 * i
        ids = tok.encode(arithmetic.completion_text(a, b) + teacher_build.END, add_special_tokens=False)
        rows.append({
            "run_id": RUN, "shard_id": SHARDS[shard], "prompt_id": f"{shard:032x}{i:032x}", "sample_index": 0,
            "messages": [{"role": "user", "content": arithmetic.question_text(a, b)}], "reference": str(a + b),
            "completion": arithmetic.completion_text(a, b), "answer": str(a + b), "finish_reason": "stop",
            "prompt_tokens": 20, "completion_tokens": len(ids), "completion_token_ids": ids,
            "topk_ids": [[t, 7] for t in ids], "topk_logprobs": [[-0.1, -3.0] for _ in ids],
            "verified": i % 6 != 0, "verifier": "math", "teacher_model": str(teacher_dir),
            "sampling": json.dumps({"logprobs": 2}), "created_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
        })
    return rows


def _commit(store: Storage, teacher_dir: Path, shard: int) -> None:
    rows = _rows(teacher_dir, shard)
    written = write_shard(store, RUN, SHARDS[shard], rows)
    commit_shard(store, written, RUN, SHARDS[shard], sorted({r["prompt_id"] for r in rows}), [],
                 ShardStats(prompts=len(rows), traces=len(rows), samples_drawn=len(rows)))


def _finalize(store: Storage, teacher_dir: Path, n: int) -> None:
    finalize_run(store, RUN, "fp", str(teacher_dir), None, SHARDS[:n])


def _spec(teacher_dir: Path, run: str) -> PackSpec:
    return PackSpec(TraceDataConfig(runs=[run]).model_dump(mode="json"), str(teacher_dir), True, 2, 256)


def test_unfinished_run_is_refused_with_the_path_what_is_missing_and_the_fixes(teacher_dir: Path, tmp_path: Path) -> None:
    store = Storage(str(tmp_path / "live"))
    store.put_if_absent("run.json", b"{}")
    _commit(store, teacher_dir, 0)
    with pytest.raises(TrainingDataError) as err:
        finished_run_files(TraceDataConfig(runs=[store.uri]))
    text = str(err.value)
    for needed in ("data.runs[0]", store.uri, "manifest.json and _SUCCESS missing", "1 committed shards so far",
                   "Wait for the run", "re-run `potstill generate`", "data.follow: true"):
        assert needed in text, (needed, text)
    with pytest.raises(TrainingDataError, match="no committed shards"):
        finished_run_files(TraceDataConfig(runs=[str(tmp_path / "nothing")]))


def test_finished_run_files_come_from_the_manifest_in_shard_order(teacher_dir: Path, tmp_path: Path) -> None:
    store = Storage(str(tmp_path / "done"))
    for shard in (2, 0, 1):
        _commit(store, teacher_dir, shard)
    store.put(f"data/{SHARDS[0]}/crashed-attempt.parquet", b"not committed")  # never listed, never read
    _finalize(store, teacher_dir, 3)
    files = finished_run_files(TraceDataConfig(runs=[store.uri]))
    assert [Path(f).parent.name for f in files] == SHARDS[:3]
    assert not any("crashed" in f for f in files)


def test_commit_watcher_returns_each_new_commit_once_and_finishes_with_success(teacher_dir: Path, tmp_path: Path) -> None:
    store = Storage(str(tmp_path / "w"))
    watcher = CommitWatcher([store.uri], TraceDataConfig(runs=["x"]).storage)
    assert watcher.poll() == ([], False)
    _commit(store, teacher_dir, 1)
    _commit(store, teacher_dir, 0)
    new, finished = watcher.poll()
    assert [Path(f).parent.name for f in new] == [SHARDS[0], SHARDS[1]] and not finished
    _commit(store, teacher_dir, 2)
    _finalize(store, teacher_dir, 3)
    new, finished = watcher.poll()
    assert [Path(f).parent.name for f in new] == [SHARDS[2]] and finished
    assert watcher.poll() == ([], True)


def test_local_reader_yields_every_kept_trace_once_shuffled_and_deterministic(teacher_dir: Path, tmp_path: Path) -> None:
    store = Storage(str(tmp_path / "r"))
    for shard in range(3):
        _commit(store, teacher_dir, shard)
    files = CommitWatcher([store.uri], TraceDataConfig(runs=["x"]).storage).poll()[0]
    reader = LocalReader(_spec(teacher_dir, store.uri), micro_batch_size=2, shuffle_rows=4, seed=3)
    batches = list(reader.batches(files))
    assert sum(int(b["num_docs"].sum()) for b in batches) == 3 * 10  # 2 of 12 per shard are unverified
    assert all(len(b["input_ids"]) == 2 for b in batches[:-1])
    again = list(reader.batches(files))
    assert all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(batches, again))
    other_epoch = list(reader.batches(files, epoch=1))
    assert any((a["input_ids"] != b["input_ids"]).any() for a, b in zip(batches, other_epoch))


def test_empty_batch_has_no_labels() -> None:
    spec = PackSpec({"runs": ["x"]}, "tok", True, 3, 16, pad_id=0)
    batch = empty_batch(spec, 2)
    assert (batch["labels"] == -100).all() and batch["topk_ids"].shape == (2, 16, 3) and batch["num_tokens"].sum() == 0


def test_follow_trains_round_by_round_until_success_and_resumes_by_counting(teacher_dir: Path, tmp_path: Path) -> None:
    import threading

    import torch

    store = Storage(str(tmp_path / "live"))
    _commit(store, teacher_dir, 0)
    spec = _spec(teacher_dir, store.uri)
    state = LoopState()
    storage_cfg = TraceDataConfig(runs=["x"]).storage
    source = FollowSource(state, LocalReader(spec, 1), spec, torch.device("cpu"), CommitWatcher([store.uri], storage_cfg),
                          poll_s=0.05)
    seen: list[np.ndarray] = []
    for batch in source(0, state):
        seen.append(batch["input_ids"])
        if len(seen) == 2:  # the run goes on while training reads it: two more shards, then finalize
            _commit(store, teacher_dir, 1)
            threading.Timer(0.3, lambda: (_commit(store, teacher_dir, 2), _finalize(store, teacher_dir, 3))).start()
    assert [Path(f).parent.name for f in state.data["done"]] == SHARDS[:3]
    assert state.data["round"] is None and state.data["done_micro"] == len(seen)
    total = len(seen)

    # A checkpoint taken 2 micro-batches into the second round (shard 1): the resumed source replays that round
    # from its third micro-batch without re-reading round one, then polls and finds shard 2.
    first_round = len(list(LocalReader(spec, 1).batches([state.data["done"][0]], 0)))
    resumed = LoopState(data={"done": state.data["done"][:1], "done_micro": first_round, "round": state.data["done"][1:2]})
    source = FollowSource(resumed, LocalReader(spec, 1), spec, torch.device("cpu"),
                          CommitWatcher([store.uri], storage_cfg, seen=[]), poll_s=0.05)
    rest = [b["input_ids"] for b in source(0, LoopState(micro_in_epoch=first_round + 2))]
    assert len(rest) == total - first_round - 2
    assert all((a == b).all() for a, b in zip(rest, seen[first_round + 2:]))
    # Later epochs re-read every shard seen.
    assert sum(1 for _ in source(1, LoopState())) == total


def test_a_round_is_recorded_done_when_its_last_batch_is_handed_out(teacher_dir: Path, tmp_path: Path) -> None:
    """A checkpoint taken right after the step that trained a round's last batch (a run whose last step is also a
    periodic checkpoint) records the round as done; before, it recorded it as still in progress, so the run's final
    checkpoint listed no finished shards."""
    import torch

    store = Storage(str(tmp_path / "done-at-last"))
    for shard in range(2):
        _commit(store, teacher_dir, shard)
    _finalize(store, teacher_dir, 2)
    spec = _spec(teacher_dir, store.uri)
    state = LoopState()
    source = FollowSource(state, LocalReader(spec, 1), spec, torch.device("cpu"),
                          CommitWatcher([store.uri], TraceDataConfig(runs=["x"]).storage), poll_s=0.01)
    as_handed_out = [(list(state.data["done"]), state.data["round"], state.data["done_micro"]) for _ in source(0, state)]
    total = len(as_handed_out)
    assert total > 2
    done, in_progress, done_micro = as_handed_out[-1]
    assert sorted(Path(f).parent.name for f in done) == SHARDS[:2] and in_progress is None and done_micro == total
    assert all(d == [] and r is not None for d, r, _ in as_handed_out[:-1])  # one round of both shards until then


def _age(store: Storage, seconds: float) -> None:
    """Make every object of a local run look `seconds` old to the store's clock (file mtimes)."""
    import os
    import time

    for info in store.list_info(""):
        os.utime(store.path(info.rel), (time.time() - seconds, time.time() - seconds))


def test_follow_stops_with_the_fix_when_the_generator_died(teacher_dir: Path, tmp_path: Path) -> None:
    import threading

    import torch

    from potstill.pipelines.distill.run_data import GeneratorStalledError

    store = Storage(str(tmp_path / "dead"))
    store.put_if_absent("run.json", b"{}")
    _commit(store, teacher_dir, 0)
    _age(store, 3600)  # the generator committed one shard an hour ago and was never heard of again
    spec = _spec(teacher_dir, store.uri)
    source = FollowSource(LoopState(), LocalReader(spec, 1), spec, torch.device("cpu"),
                          CommitWatcher([store.uri], TraceDataConfig(runs=["x"]).storage), poll_s=0.01,
                          idle_timeout_s=600)
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["batches"] = sum(1 for _ in source(0, LoopState()))
        except GeneratorStalledError as exc:
            outcome["error"] = str(exc)

    worker = threading.Thread(target=train, daemon=True)
    worker.start()
    worker.join(300)  # before: polled forever
    assert not worker.is_alive(), "follow mode waited forever for a dead generator"
    assert "has committed nothing for" in outcome["error"] and "Re-run `potstill generate`" in outcome["error"]
    assert "data.follow_idle_timeout_s (now 600 s)" in outcome["error"]


def test_the_driver_does_not_wait_forever_for_a_first_shard_of_a_dead_run(tmp_path: Path) -> None:
    from potstill.pipelines.distill.run_data import GeneratorStalledError
    from potstill.pipelines.jobs.run_training import _first_commits
    from potstill.schemas.training import TrainingConfig

    store = Storage(str(tmp_path / "dead"))
    store.put_if_absent("run.json", b"{}")
    _age(store, 3600)
    cfg = TrainingConfig.model_validate({"name": "t", "data": {"runs": [store.uri], "follow": True, "follow_poll_s": 0.01,
                                                               "follow_idle_timeout_s": 60}})
    with pytest.raises(GeneratorStalledError, match=r"data.runs\[0\]: .* has committed nothing for"):
        _first_commits(cfg, None)
