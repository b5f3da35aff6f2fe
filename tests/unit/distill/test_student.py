"""The student: a fresh Llama vLLM CPU can load, a clear KD tokenizer error, and an HF folder that round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from potstill.pipelines.arithmetic import teacher_build
from potstill.pipelines.distill.student import build_student, check_kd_tokenizer, load_student, save_hf
from potstill.schemas.training import LossConfig, StudentConfig


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tok")
    teacher_build.save_tokenizer(teacher_build.build_tokenizer(), out)
    return AutoTokenizer.from_pretrained(out)


def test_fresh_student_takes_its_vocabulary_from_the_tokenizer(tok) -> None:
    model = build_student(StudentConfig(hidden_size=128, num_heads=2, num_layers=1, intermediate_size=64), tok, max_positions=256)
    assert model.config.vocab_size == 128 and len(tok) == 104
    assert model.config.head_dim == 64 and model.config.max_position_embeddings == 256
    assert model.config.eos_token_id == tok.eos_token_id


def test_head_dim_below_64_is_an_error_naming_the_keys(tok) -> None:
    with pytest.raises(ValueError, match=r"student.hidden_size=128 with student.num_heads=4 gives head_dim 32.*lower student.num_heads"):
        build_student(StudentConfig(hidden_size=128, num_heads=4), tok, max_positions=64)


def test_kd_with_a_different_tokenizer_is_an_error_with_the_fix(tok, tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")))
    check_kd_tokenizer(LossConfig(kd_weight=0.0), other, tok)  # SFT only: any tokenizer
    check_kd_tokenizer(LossConfig(kd_weight=1.0), tok, tok)
    with pytest.raises(ValueError, match=r"loss.kd_weight=1.0 needs the student to share the teacher's tokenizer.*"
                                         r"2 tokens in the student's, 104 in the teacher's; 1 shared tokens have other ids "
                                         r"\(e.g. 'a': 0 vs 74\).*set loss.kd_weight: 0.*teacher's tokenizer"):
        check_kd_tokenizer(LossConfig(kd_weight=1.0), other, tok)


def test_saved_folder_loads_in_transformers_with_the_chat_template(tok, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = build_student(StudentConfig(hidden_size=64, num_heads=1, num_layers=1, intermediate_size=64), tok, max_positions=128, seed=3)
    out = save_hf(model, tok, tmp_path / "student")
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {p.name for p in out.iterdir()}
    loaded = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    loaded_tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    messages = [{"role": "user", "content": "What is 1 + 2?"}]
    assert loaded_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == teacher_build.render_prompt("What is 1 + 2?")
    ids = torch.tensor([loaded_tok.encode("What is 1 + 2?", add_special_tokens=False)])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    again = load_student(StudentConfig(model=str(out)), loaded_tok, max_positions=128)
    assert again.config.hidden_size == 64
