"""The student model: build a fresh Llama or load a Hugging Face folder, check its tokenizer, save it.

    tok = load_tokenizer(student_tokenizer_path(cfg.student, teacher="potstill:arithmetic-teacher"))
    check_kd_tokenizer(cfg.loss, tok, teacher_tok)
    model = load_student(cfg.student, tok, max_positions=cfg.packing.max_tokens, seed=cfg.run.seed)
    save_hf(model, tok, "out/student")   # config.json, model.safetensors, tokenizer + chat template

A fresh student is a `LlamaForCausalLM` sized by `StudentConfig`, with the
vocabulary of its tokenizer (rounded up to a multiple of 64, as the shipped
teacher does) and head_dim = hidden / heads >= 64 so vLLM's CPU backend can
serve it. The saved folder loads offline in transformers and vLLM.
`load_student` loads a whole pretrained model in one process (single worker,
DDP, tests); the sharded, meta-device path for large students is
`student_init.build_trainable`. Student folders may be local or s3://
(`student_files.local_model_dir`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from potstill.schemas.generation import StorageConfig
    from potstill.schemas.training import LossConfig, StudentConfig

MIN_HEAD_DIM = 64
"""vLLM CPU attention rejects smaller heads (see NOTES.md)."""


def student_tokenizer_path(cfg: "StudentConfig", teacher: str | None) -> str:
    """Tokenizer folder: `student.tokenizer`, else the student model's, else (fresh student) the teacher's."""
    from potstill.pipelines.models.assets import resolve_model

    name = cfg.tokenizer or cfg.model or teacher
    if name is None:
        raise ValueError(
            "student.tokenizer is unset, student.model is unset and the traces name no teacher; "
            "set student.tokenizer to a tokenizer folder"
        )
    return resolve_model(name)


def load_tokenizer(path: str, storage: "StorageConfig | None" = None) -> Any:
    """A Hugging Face tokenizer from a local or s3:// folder (or a shipped `potstill:` name); never downloads from a hub."""
    from transformers import AutoTokenizer

    from potstill.pipelines.distill.student_files import local_model_dir

    return AutoTokenizer.from_pretrained(local_model_dir(path, storage, weights=False), local_files_only=True)


def same_vocabulary(a: Any, b: Any) -> bool:
    """True when both tokenizers map every token to the same id (what top-k id alignment needs)."""
    return a.get_vocab() == b.get_vocab()


def vocabulary_difference(student_tok: Any, teacher_tok: Any) -> str:
    """Why two vocabularies differ, in words: sizes and the first tokens whose ids disagree."""
    s, t = student_tok.get_vocab(), teacher_tok.get_vocab()
    only_s, only_t = sorted(set(s) - set(t), key=s.get), sorted(set(t) - set(s), key=t.get)
    moved = sorted((tok for tok in set(s) & set(t) if s[tok] != t[tok]), key=t.get)
    parts = [f"{len(s)} tokens in the student's, {len(t)} in the teacher's"]
    if moved:
        parts.append(f"{len(moved)} shared tokens have other ids (e.g. {moved[0]!r}: {s[moved[0]]} vs {t[moved[0]]})")
    if only_t:
        parts.append(f"{len(only_t)} teacher tokens are missing from the student's (e.g. {only_t[0]!r})")
    if only_s:
        parts.append(f"{len(only_s)} student tokens are not the teacher's (e.g. {only_s[0]!r})")
    return "; ".join(parts)


def check_kd_tokenizer(loss: "LossConfig", student_tok: Any, teacher_tok: Any) -> None:
    """Raise when KD is on but the student's tokenizer differs from the teacher's (the reason names the difference)."""
    if loss.kd_weight > 0 and not same_vocabulary(student_tok, teacher_tok):
        raise ValueError(
            f"loss.kd_weight={loss.kd_weight} needs the student to share the teacher's tokenizer, but the student's "
            f"({getattr(student_tok, 'name_or_path', '?')}) and the teacher's ({getattr(teacher_tok, 'name_or_path', '?')}) "
            f"differ: {vocabulary_difference(student_tok, teacher_tok)}. The teacher's top-k ids would point at the "
            "wrong tokens; set loss.kd_weight: 0 (SFT only), or use a student that shares the teacher's tokenizer "
            "(its model family; leave student.tokenizer unset for a fresh student)"
        )


def build_student(cfg: "StudentConfig", tokenizer: Any, max_positions: int, seed: int = 0, attn: str = "sdpa") -> Any:
    """A freshly initialised `LlamaForCausalLM` of the configured size (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if cfg.hidden_size % cfg.num_heads or cfg.hidden_size // cfg.num_heads < MIN_HEAD_DIM:
        raise ValueError(
            f"student.hidden_size={cfg.hidden_size} with student.num_heads={cfg.num_heads} gives head_dim "
            f"{cfg.hidden_size / cfg.num_heads:g}; vLLM CPU needs an integer head_dim >= {MIN_HEAD_DIM}, "
            "lower student.num_heads or raise student.hidden_size"
        )
    config = LlamaConfig(
        vocab_size=-(-len(tokenizer) // 64) * 64,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        head_dim=cfg.hidden_size // cfg.num_heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32)


def attn_implementation(cfg: "StudentConfig", device_type: str) -> str:
    """The transformers attention implementation: the configured one, or for `auto` flash-attention 2 on GPU when
    the flash_attn package is installed, else SDPA."""
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    if device_type == "cuda":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


def check_vocab(cfg: "StudentConfig", embeddings: int, tokenizer: Any) -> None:
    """Raise when the model has fewer embeddings than its tokenizer has tokens."""
    if embeddings < len(tokenizer):
        raise ValueError(
            f"student.model {cfg.model!r} has {embeddings} embeddings but its tokenizer has {len(tokenizer)} tokens; "
            "set student.tokenizer to the tokenizer the model was trained with"
        )


def load_student(cfg: "StudentConfig", tokenizer: Any, max_positions: int, seed: int = 0,
                 storage: "StorageConfig | None" = None, device_type: str = "cpu") -> Any:
    """The whole student in this process: `cfg.model` loaded from its folder (float32), or a fresh `build_student`."""
    if cfg.model is None:
        return build_student(cfg, tokenizer, max_positions, seed, attn=attn_implementation(cfg, device_type))
    import torch
    from transformers import AutoModelForCausalLM

    from potstill.pipelines.distill.student_files import local_model_dir

    model = AutoModelForCausalLM.from_pretrained(local_model_dir(cfg.model, storage), dtype=torch.float32,
                                                 local_files_only=True, attn_implementation=attn_implementation(cfg, device_type))
    check_vocab(cfg, model.get_input_embeddings().num_embeddings, tokenizer)
    return model


def unwrap(model: Any) -> Any:
    """The bare model inside a DDP/FSDP wrapper (or the model itself)."""
    return getattr(model, "module", model)


def save_hf(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Write a Hugging Face folder (config.json, model.safetensors, generation config, tokenizer files
    with the chat template) that transformers and vLLM load offline; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bare = unwrap(model)
    bare.config.use_cache = True  # training runs without a KV cache; inference wants it
    gen = bare.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    bare.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
