"""`run.json`: an output root holds one run of one config, one plan and one teacher, pinned once.

    .venv/bin/pytest tests/unit/output/test_run_record.py -q

Runs go through the real controller on the simulated pool (scripted teacher)
with real local storage; a re-run whose prompts, teacher or folder differ must
be refused before any work, naming the difference.
"""

from __future__ import annotations

import json
import os

import pytest

import potstill.pipelines.models.assets as assets
from potstill.pipelines.generate.controller import GenerationController
from potstill.pipelines.generate.plan import WorkUnit
from potstill.pipelines.generate.simulated_pool import SimulatedPool
from potstill.pipelines.generate.unit_runner import UnitResult
from potstill.pipelines.output.commit import CommitError, read_commits, read_manifest
from potstill.pipelines.output.run_record import RunConflictError, read_run_record
from potstill.pipelines.output.shard_output import persist_unit
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import GenerationConfig, OutputConfig, SamplingConfig, TeacherConfig


def _prompts(path, questions: list[str]) -> str:
    path.write_text("".join(json.dumps({"question": q, "answer": str(i)}) + "\n" for i, q in enumerate(questions)))
    return str(path)


def _teacher_folder(tmp_path) -> str:
    folder = tmp_path / "teacher"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    return str(folder)


def _config(out: str, prompts: str, model: str = "scripted-teacher", revision: str | None = "test") -> GenerationConfig:
    return GenerationConfig.model_validate({
        "run_id": "pinned",
        "prompts": {"path": prompts, "fields": {"prompt": "question", "reference": "answer"}},
        "teacher": {"model": model, "revision": revision},
        "replicas": {"min_sequences_in_flight": None},
        "sampling": {"n": 1},
        "verify": {"method": "exact"},
        "output": {"uri": out, "prompts_per_shard": 2},
    })


def _run(cfg: GenerationConfig) -> dict:
    pool = SimulatedPool(cfg, cfg.output.uri, script=lambda prompt, k: prompt[-1])
    return GenerationController(cfg, cfg.output.uri).run(pool)


def test_generate_refuses_a_non_empty_folder_that_is_not_a_potstill_run(tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    cfg = _config(str(out), _prompts(tmp_path / "p.jsonl", ["a?", "b?"]))
    with pytest.raises(RunConflictError, match=r"is not empty \(thesis.tex\) and holds no potstill run.json"):
        _run(cfg)
    assert sorted(os.listdir(out)) == ["thesis.tex"]  # nothing written beside the user's file


def test_a_rerun_after_the_prompts_file_changed_is_refused_naming_the_first_changed_shard(tmp_path):
    questions = [f"q{i}?" for i in range(6)]
    prompts = _prompts(tmp_path / "p.jsonl", questions)
    cfg = _config(str(tmp_path / "out"), prompts)
    _run(cfg)
    record = read_run_record(Storage(cfg.output.uri))
    assert record.plan.prompts == 6 and len(record.plan.shard_ids) == 3
    commits = read_commits(Storage(cfg.output.uri))
    assert {c.plan_hash for c in commits.values()} == {record.plan_hash}
    assert read_manifest(cfg.output.uri).plan_hash == record.plan_hash
    data_before = Storage(cfg.output.uri).list("data")
    questions[3] = "q3 edited?"  # shard #1 changes; a re-run must not regenerate from the edit on
    _prompts(tmp_path / "p.jsonl", questions)
    with pytest.raises(RunConflictError, match=r"planned prompts changed: .*first different shard: #1"):
        _run(cfg)
    assert Storage(cfg.output.uri).list("data") == data_before


def test_a_rerun_after_only_a_reference_changed_is_refused(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"question": "a?", "answer": "1"}\n{"question": "b?", "answer": "2"}\n')
    cfg = _config(str(tmp_path / "out"), str(prompts))
    _run(cfg)
    prompts.write_text('{"question": "a?", "answer": "1"}\n{"question": "b?", "answer": "3"}\n')
    with pytest.raises(RunConflictError, match="a reference answer or a per-prompt max_tokens changed"):
        _run(cfg)


def test_a_rerun_after_the_teacher_folder_changed_is_refused_naming_the_file(tmp_path):
    teacher = _teacher_folder(tmp_path)
    cfg = _config(str(tmp_path / "out"), _prompts(tmp_path / "p.jsonl", ["a?", "b?"]), model=teacher)
    _run(cfg)
    with open(os.path.join(teacher, "model.safetensors"), "ab") as f:
        f.write(b"\1" * 8)  # the weights were replaced under the same path and the same configured revision
    with pytest.raises(RunConflictError, match=r"teacher changed: .*model.safetensors 64 -> 72 bytes"):
        _run(cfg)


def test_the_teacher_revision_is_hashed_once_per_run_and_never_by_an_engine(tmp_path, monkeypatch):
    calls = []
    real = assets.model_revision
    monkeypatch.setattr(assets, "model_revision", lambda path: calls.append(str(path)) or real(path))
    teacher = _teacher_folder(tmp_path)
    from potstill.pipelines.engines.vllm_engine import VllmEngine

    VllmEngine(TeacherConfig(model=teacher), SamplingConfig())  # what every replica builds: no hashing
    assert calls == []
    record = assets.pin_teacher(TeacherConfig(model=teacher))  # the one place: the controller, once per run
    assert calls == [teacher] and record.revision == real(teacher)
    assert assets.pin_teacher(TeacherConfig(model=teacher), record) == record  # a resume: by stat, no re-hash
    assert calls == [teacher]
    assets.check_teacher(TeacherConfig(model=teacher), record)  # a replica: by stat
    assert calls == [teacher]


def test_a_replica_refuses_a_teacher_folder_other_than_the_pinned_one(tmp_path):
    teacher = _teacher_folder(tmp_path)
    pinned = assets.pin_teacher(TeacherConfig(model=teacher))
    os.utime(os.path.join(teacher, "config.json"), ns=(1, 1))  # another node's copy: same bytes, other mtimes
    assets.check_teacher(TeacherConfig(model=teacher), pinned)
    (tmp_path / "teacher" / "model.safetensors").write_bytes(b"\1" * 64)  # same size, other bytes
    with pytest.raises(assets.TeacherChangedError, match="same files and sizes, different bytes"):
        assets.check_teacher(TeacherConfig(model=teacher), pinned)
    (tmp_path / "teacher" / "extra.bin").write_bytes(b"x")
    with pytest.raises(assets.TeacherChangedError, match="extra.bin added"):
        assets.check_teacher(TeacherConfig(model=teacher), pinned)


def test_a_unit_of_another_plan_or_teacher_is_never_committed(tmp_path):
    cfg = _config(str(tmp_path / "out"), _prompts(tmp_path / "p.jsonl", ["a?", "b?"]))
    _run(cfg)
    store = Storage(cfg.output.uri)
    record = read_run_record(store)
    unit = WorkUnit("pinned", "000009-x", 9, [], plan_hash="another-plan")
    with pytest.raises(CommitError, match="planned from prompts with plan hash another-pla"):
        persist_unit(store, unit, UnitResult(), OutputConfig(), record)
    unit.plan_hash = record.plan_hash
    rows = [{"teacher_revision": "other-teacher"}]
    with pytest.raises(CommitError, match=r"teacher revision\(s\) \['other-teacher'\], but the run pinned 'test'"):
        persist_unit(store, unit, UnitResult(rows=rows), OutputConfig(), record)
    assert "000009-x" not in read_commits(store)


def test_run_json_keeps_no_secret_from_the_config(tmp_path, monkeypatch):
    cfg = _config(str(tmp_path / "out"), _prompts(tmp_path / "p.jsonl", ["a?"]))
    cfg.teacher.engine_kwargs = {"hf_token": "hf_canary_1234567890"}
    cfg.output.storage.endpoint_url = "http://user:canary-pass-123@localhost:9"
    _run(cfg)
    text = Storage(cfg.output.uri).read_bytes("run.json").decode()
    assert "hf_canary_1234567890" not in text and "canary-pass-123" not in text
    assert '"hf_token": "***"' in text
