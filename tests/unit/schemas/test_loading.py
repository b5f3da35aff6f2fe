"""Every shipped config loads; mistakes are all reported at once with key paths and hints."""

from pathlib import Path

import pytest
import yaml

from potstill.schemas import ConfigError, GenerationConfig, TrainingConfig, load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


def _model_for(path: Path):
    data = yaml.safe_load(path.read_text())
    return TrainingConfig if "data" in data else GenerationConfig


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads(path):
    cfg = load_config(path, _model_for(path))
    assert cfg.model_dump()


def test_three_mistakes_are_all_reported_with_key_paths(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "prompts:\n  arithmetic: {count: 10}\n"
        "sampling:\n  temperture: 0.5\n"
        "output:\n  prompts_per_shardd: 3\n"
        "teacher:\n  tensor_parallel_size: two\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(bad, GenerationConfig)
    problems = info.value.problems
    assert len(problems) == 3, problems
    text = str(info.value)
    assert "sampling.temperture: unknown key; did you mean 'temperature'?" in text
    assert "output.prompts_per_shardd: unknown key; did you mean 'prompts_per_shard'?" in text
    assert any(p.startswith("teacher.tensor_parallel_size:") and "'two'" in p for p in problems)


def test_missing_required_key_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrun: {epochs: 1}\n")
    with pytest.raises(ConfigError, match=r"data: required key is missing"):
        load_config(bad, TrainingConfig)


def test_cross_field_rule_names_the_section(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts: {path: a.jsonl, arithmetic: {count: 3}}\n")
    with pytest.raises(ConfigError, match=r"prompts: set exactly one of `path`"):
        load_config(bad, GenerationConfig)


def test_yaml_syntax_error_gives_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts:\n  path: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        load_config(bad, GenerationConfig)


def test_overrides_apply_dotted_keys(tmp_path):
    cfg = load_config(EXAMPLES[0].parent / "arithmetic.yaml", GenerationConfig, {"output.uri": "/tmp/x", "run_id": "abc"})
    assert cfg.output.uri == "/tmp/x" and cfg.resolved_run_id() == "abc"


@pytest.mark.parametrize(("content", "problem"), [
    (b"- prompts\n- sampling\n", "<top level>: expected a mapping of keys (e.g. `prompts: ...`), got a list"),
    (b"42\n", "<top level>: expected a mapping of keys (e.g. `prompts: ...`), got a number"),
    (b"just words\n", "<top level>: expected a mapping of keys (e.g. `prompts: ...`), got a string"),
    (b"prompts: {arithmetic: {}}\nrun_id: caf\xe9\n", "line 2: not UTF-8 (byte 0xe9 at byte 37); save the file as UTF-8"),
    (b"prompts: {arithmetic: {}}\nsampling:\n  n: 2\nsampling:\n  n: 8\n",
     "key 'sampling' appears twice (line 2 and line 4); YAML would keep only the last value"),
    (b"prompts:\n  arithmetic: {count: 3, count: 300}\n", "key 'count' appears twice (line 2 and line 2)"),
    (b"prompts: {arithmetic: {}}\noutput: 5\n", "output: expected a mapping of keys, got a number; cannot set output.uri"),
])
def test_a_file_that_is_not_one_utf8_mapping_without_repeated_keys_is_refused_clearly(tmp_path, content, problem):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path, GenerationConfig, {"output.uri": "runs/x"})  # the CLI always passes overrides
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(problem), info.value.problems
