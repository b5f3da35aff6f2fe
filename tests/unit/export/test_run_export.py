"""`potstill export` / `potstill decontaminate` on real committed runs (commit protocol, real Parquet, real `datasets`).

    .venv/bin/pytest tests/unit/export/test_run_export.py -q
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import potstill.pipelines.export.writer as writer_mod
from potstill.cli import app
from potstill.pipelines.export.formats import ExportFormatter
from potstill.pipelines.export.plan import ExportError
from potstill.pipelines.export.run_export import decontaminate_runs, export_runs
from potstill.pipelines.output.commit import read_manifest
from potstill.pipelines.output.storage import Storage
from potstill.schemas.export import BenchmarkSource, DecontaminationConfig, ExportConfig, ExportFilters
from tests.unit.output.committed_runs import UNCOMMITTED, make_run, question


def load(path: str | Path, builder: str, tmp_path: Path):
    from datasets import load_dataset

    ext = "jsonl" if builder == "json" else "parquet"
    return load_dataset(builder, data_files=f"{path}/data/train-*.{ext}", split="train", cache_dir=str(tmp_path / "hf"))


def card(out: Path) -> dict:
    from huggingface_hub import DatasetCard

    return DatasetCard.load(out / "README.md").data.to_dict()


@pytest.fixture
def run(tmp_path) -> str:
    return make_run(tmp_path / "run", "r1", prompts=8, n=2, per_shard=3)  # 3 shards + a killed attempt


@pytest.mark.parametrize("fmt,builder", [("trl", "parquet"), ("prompt-completion", "parquet"), ("sharegpt", "parquet"),
                                         ("openai", "json")])
def test_formats_round_trip_through_datasets_and_leave_out_the_killed_attempt(run, tmp_path, fmt, builder):
    out = tmp_path / f"export-{fmt}"
    summary = export_runs(ExportConfig(runs=[run], out=str(out), format=fmt))
    manifest = read_manifest(run)
    ds = load(out, builder, tmp_path)
    assert ds.num_rows == summary.rows == manifest.totals.verified == 13
    text = json.dumps(ds.to_list())
    assert UNCOMMITTED not in text
    first = ds[0]
    if fmt in ("trl", "openai"):
        assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
        assert first["messages"][0]["content"] == question(0)
        assert first["messages"][1]["content"].startswith("<think>\n") and first["messages"][1]["content"].endswith("\n300")
    elif fmt == "prompt-completion":
        assert [m["role"] for m in first["prompt"]] == ["user"] and first["completion"][0]["role"] == "assistant"
    else:
        assert [t["from"] for t in first["conversations"]] == ["human", "gpt"]
    meta = card(out)
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 13
    assert meta["potstill"]["runs"][0]["teacher_model"] == "tiny-teacher"
    assert meta["potstill"]["runs"][0]["teacher_revision"] == "rev-1"
    assert meta["potstill"]["counts"]["unverified"] == 3 and meta["license"] == "other"
    assert not any(p.name.startswith(".potstill-staging") for p in out.iterdir())


def test_the_folder_loads_by_its_card_and_the_reasoning_field_survives(run, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "field"
    export_runs(ExportConfig(runs=[run], out=str(out), format="trl", reasoning="field", license="apache-2.0"))
    ds = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    reply = ds[0]["messages"][-1]
    assert reply == {"role": "assistant", "content": "300", "reasoning_content": "0+0=.. carry\nsample 0"}
    assert ds[0]["messages"][0]["reasoning_content"] is None
    assert card(out)["license"] == "apache-2.0"


def test_shards_sized_by_bytes_with_hugging_face_names(run, tmp_path):
    out = tmp_path / "small-shards"
    summary = export_runs(ExportConfig(runs=[run], out=str(out), format="trl", shard_bytes=400))
    names = sorted(p.name for p in (out / "data").iterdir())
    n = len(names)
    assert n > 2 and names == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)] and summary.files == [f"data/{x}" for x in names]
    assert load(out, "parquet", tmp_path).num_rows == 13


def test_per_prompt_best_of_and_token_bounds(tmp_path):
    run = make_run(tmp_path / "run", "r1", prompts=6, n=3, per_shard=3, verdict=lambda i, k: k != 0)
    out = tmp_path / "best"
    s = export_runs(ExportConfig(runs=[run], out=str(out), format="trl", filters=ExportFilters(
        verified_only=False, per_prompt=1, best_by=["verified", "first"])))
    ds = load(out, "parquet", tmp_path)
    assert s.rows == s.prompts == 6 and s.counts.per_prompt == 12
    assert set(ds["sample_index"]) == {1} and all(ds["verified"])
    with pytest.raises(ExportError, match="no row passed the filters .*token length 18"):
        export_runs(ExportConfig(runs=[run], out=str(tmp_path / "none"), format="trl",
                                 filters=ExportFilters(verified_only=False, max_completion_tokens=5)))


def test_planted_benchmark_questions_are_removed_and_counted_in_the_card(run, tmp_path):
    bench = tmp_path / "bench.jsonl"
    planted = [question(1), "  " + question(4).upper().replace(" ", "   ") + "  "]  # verbatim, and respaced/upper-cased
    bench.write_text("".join(json.dumps({"problem": p}) + "\n" for p in planted + ["What is 1 + 1 + 1 + 1 + 999?"]))
    out = tmp_path / "clean"
    s = export_runs(ExportConfig(runs=[run], out=str(out), format="trl", filters=ExportFilters(verified_only=False),
                                 decontamination=DecontaminationConfig(benchmarks=[BenchmarkSource(path=str(bench))])))
    ds = load(out, "parquet", tmp_path)
    prompts = {m[0]["content"] for m in ds["messages"]}
    assert question(1) not in prompts and question(4) not in prompts and question(0) in prompts
    assert ds.num_rows == 16 - 4 and s.counts.decontaminated == 4
    d = card(out)["potstill"]["decontamination"]
    assert (d["prompts_matched"], d["rows_matched"], d["rows_removed"]) == (2, 4, 4)
    assert d["benchmarks"][0]["name"] == "bench" and d["benchmarks"][0]["prompts_matched"] == 2
    assert "**4 rows removed**" in (out / "README.md").read_text()
    # the standalone check reports the same overlap, and writes one line per overlapping row
    report = decontaminate_runs([run], DecontaminationConfig(benchmarks=[BenchmarkSource(path=str(bench))]),
                                report_uri=str(tmp_path / "overlap.jsonl"))
    assert (report.prompts_matched, report.rows_matched) == (2, 4)
    lines = [json.loads(x) for x in (tmp_path / "overlap.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and {x["where"] for x in lines} == {"prompt"} and {x["benchmark"] for x in lines} == {"bench"}


def test_a_crash_while_writing_leaves_nothing_that_looks_like_an_export(run, tmp_path, monkeypatch):
    out = tmp_path / "crash"
    calls = {"n": 0}
    real = ExportFormatter.to_table

    def dies_on_the_second_shard(self, traces):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(self, traces)

    monkeypatch.setattr(ExportFormatter, "to_table", dies_on_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        export_runs(ExportConfig(runs=[run], out=str(out), format="trl", shard_bytes=300))
    assert not (out / "README.md").exists() and not (out / "data").exists()
    assert [p.name for p in out.iterdir()] == []  # the staged first shard was discarded too
    monkeypatch.undo()
    assert export_runs(ExportConfig(runs=[run], out=str(out), format="trl")).rows == 13


def test_a_crash_before_the_card_is_refused_until_overwrite_and_overwrite_drops_stale_shards(run, tmp_path, monkeypatch):
    out = tmp_path / "half"
    export_runs(ExportConfig(runs=[run], out=str(out), format="trl", shard_bytes=300))
    many = sorted(p.name for p in (out / "data").iterdir())
    with pytest.raises(ExportError, match="already holds an export; pass --overwrite"):
        export_runs(ExportConfig(runs=[run], out=str(out), format="trl"))
    real_put = Storage.put

    def crash_on_card(self, rel, data):
        if rel == writer_mod.CARD:
            raise OSError("disk gone")
        return real_put(self, rel, data)

    monkeypatch.setattr(Storage, "put", crash_on_card)
    with pytest.raises(OSError, match="disk gone"):
        export_runs(ExportConfig(runs=[run], out=str(out), format="trl", overwrite=True))
    monkeypatch.undo()
    assert not (out / "README.md").exists()
    with pytest.raises(ExportError, match="half-written export .*--overwrite"):
        export_runs(ExportConfig(runs=[run], out=str(out), format="trl"))
    export_runs(ExportConfig(runs=[run], out=str(out), format="trl", overwrite=True))
    assert len(many) > 1 and sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]


def test_a_run_root_is_never_an_export_target(run):
    with pytest.raises(ExportError, match="is a generation run's output root"):
        export_runs(ExportConfig(runs=[run], out=run, format="trl"))


def test_cli_export_and_decontaminate_json(run, tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"question": question(2)}) + "\n")
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["export", run, "--format", "openai", "--out", str(out), "--per-prompt", "1",
                              "--against", f"{bench}:question", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["file_format"] == "jsonl" and summary["rows"] == 7 and summary["counts"]["decontaminated"] == 2
    assert sorted(os.listdir(out / "data")) == ["train-00000-of-00001.jsonl"]
    assert set(json.loads((out / "data" / "train-00000-of-00001.jsonl").read_text().splitlines()[0])) == {"messages"}
    res = runner.invoke(app, ["decontaminate", run, "--against", str(bench), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["prompts_matched"] == 1
    res = runner.invoke(app, ["export", run, "--format", "chatml", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "format: Input should be 'trl', 'prompt-completion', 'sharegpt' or 'openai'" in res.output
    res = runner.invoke(app, ["export", run, "--format", "trl", "--out", str(tmp_path / "x"), "--shard-size", "big"])
    assert res.exit_code == 2 and "--shard-size 'big' is not a size" in res.output
