"""The teacher builder: deterministic weights, a character tokenizer and chat template that load offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from potstill.pipelines.arithmetic import problems as arithmetic
from potstill.pipelines.arithmetic import teacher_build

TINY = dict(steps=3, batch=4, hidden=64, layers=1, heads=1, intermediate=64, eval_n=0, log_every=0)


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "a"
    teacher_build.build_teacher(out, seed=0, **TINY)
    return out


def test_same_seed_gives_byte_identical_weights(tiny_build: Path, tmp_path: Path) -> None:
    teacher_build.build_teacher(tmp_path / "b", seed=0, **TINY)
    for name in ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"]:
        assert (tmp_path / "b" / name).read_bytes() == (tiny_build / name).read_bytes(), name


def test_folder_has_the_hugging_face_files_and_training_info(tiny_build: Path) -> None:
    for name in ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "training_info.json"]:
        assert (tiny_build / name).is_file(), name
    info = json.loads((tiny_build / "training_info.json").read_text())
    assert info["seed"] == 0 and info["steps"] == 3
    assert info["command"].startswith("python -m potstill.pipelines.arithmetic.teacher_build --out ")
    config = json.loads((tiny_build / "config.json").read_text())
    assert config["vocab_size"] % 64 == 0 and config["head_dim"] >= 64


def test_tokenizer_is_character_level_and_round_trips(tiny_build: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_build)
    text = arithmetic.completion_text(347, 589)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    # <think> and </think> are one token each; every other character is its own token.
    assert len(ids) == len(text) - len("<think>") - len("</think>") + 2
    assert tok.convert_ids_to_tokens(ids[:2]) == ["<think>", "\n"]
    # vLLM skips special tokens when detokenizing: the reasoning tags must survive that.
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == text
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>"


def test_chat_template_renders_turns(tiny_build: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_build)
    user = [{"role": "user", "content": "What is 1 + 2?"}]
    rendered = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|user|>What is 1 + 2?<|end|><|assistant|>" == teacher_build.render_prompt("What is 1 + 2?")
    full = [{"role": "system", "content": "Add."}, *user, {"role": "assistant", "content": "3"}]
    assert tok.apply_chat_template(full, tokenize=False) == "<|system|>Add.<|end|><|user|>What is 1 + 2?<|end|><|assistant|>3<|end|>"
    with pytest.raises(Exception, match="role must be system, user or assistant"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_loss_covers_only_the_completion() -> None:
    tok = teacher_build.build_tokenizer()
    ids, labels = teacher_build.make_batch(tok, [(12, 34), (1234, 5678)])
    prompt_len = len(tok.encode(teacher_build.render_prompt("What is 12 + 34?")).ids)
    assert (labels[0, :prompt_len] == -100).all()
    completion = tok.decode([t for t in labels[0].tolist() if t != -100], skip_special_tokens=False)
    assert completion == arithmetic.completion_text(12, 34) + "<|end|>"
    assert (ids[0, labels[0].ne(-100).sum() + prompt_len :] == tok.token_to_id("<|pad|>")).all()


def test_head_dim_below_64_is_rejected() -> None:
    with pytest.raises(ValueError, match="head_dim"):
        teacher_build.build_model(teacher_build.build_tokenizer(), hidden=128, layers=1, heads=4, intermediate=64)


def test_model_names_resolve_and_revisions_hash_content(tiny_build: Path, tmp_path: Path) -> None:
    import shutil

    from potstill.pipelines.models.assets import ASSETS_DIR, model_revision, resolve_model
    from potstill.schemas.generation import SHIPPED_TEACHER

    assert resolve_model(SHIPPED_TEACHER) == str(ASSETS_DIR / "arithmetic-teacher")
    assert resolve_model("/models/x") == "/models/x"
    with pytest.raises(ValueError, match="not a shipped potstill model"):
        resolve_model("potstill:nope")
    copy = shutil.copytree(tiny_build, tmp_path / "copy")
    assert model_revision(copy) == model_revision(tiny_build)
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert model_revision(copy) != model_revision(tiny_build)
