"""The GPU proof's random-weight models, made locally with no download: a teacher folder and a student config.

    folder = write_teacher(work / "teacher", TeacherShape.llama31_8b())   # config.json + tokenizer, no weights
    config = student_config(StudentShape.qwen2_1p5b())                    # a transformers Qwen2Config

The teacher folder has no weights: vLLM fills them with `load_format="dummy"`
(speed does not depend on their values). Its tokenizer is the shipped
arithmetic teacher's character-level one (`teacher_build.build_tokenizer`'s
tokens and chat template) padded with filler tokens to the model's whole
vocabulary, so every id a random model samples decodes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TeacherShape:
    """A Llama decoder's dimensions."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tied: bool
    rope_theta: float = 500000.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def llama31_8b(cls) -> "TeacherShape":
        return cls(vocab=128256, hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, tied=False)

    @classmethod
    def tiny(cls) -> "TeacherShape":
        # head_dim 64: vLLM's CPU attention rejects smaller heads.
        return cls(vocab=512, hidden=128, intermediate=256, layers=2, heads=2, kv_heads=1, tied=True)

    def planning_shape(self) -> "ModelShape":
        """The same decoder as `potstill plan` counts it (parameters, KV cache)."""
        from potstill.pipelines.planning.shapes import ModelShape

        return ModelShape(name="llama", vocab=self.vocab, hidden=self.hidden, layers=self.layers, heads=self.heads,
                          kv_heads=self.kv_heads, head_dim=self.head_dim, intermediate=self.intermediate, tied=self.tied)

    def params(self) -> int:
        """All parameters (a tied output projection counted once)."""
        return self.planning_shape().params

    def decode_weight_params(self) -> int:
        """Parameters one decode step reads: all but the input embedding table (only looked up), unless it is the
        (tied) output projection too."""
        return self.params() - (0 if self.tied else self.vocab * self.hidden)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return self.planning_shape().kv_bytes_per_token(dtype_bytes)


@dataclass(frozen=True)
class StudentShape:
    """A Qwen2 decoder's dimensions."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int

    @classmethod
    def qwen2_1p5b(cls) -> "StudentShape":
        return cls(vocab=151936, hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2)

    @classmethod
    def tiny(cls) -> "StudentShape":
        return cls(vocab=512, hidden=128, intermediate=256, layers=2, heads=2, kv_heads=1)


def teacher_tokenizer(vocab: int) -> Any:
    """The shipped teacher's character-level tokenizer with filler tokens `<|f{i}|>` up to `vocab` ids."""
    from tokenizers import AddedToken, Tokenizer, decoders
    from tokenizers.models import BPE

    from potstill.pipelines.arithmetic.teacher_build import CHARS, REASONING_TOKENS, SPECIAL_TOKENS, UNK

    base = SPECIAL_TOKENS + REASONING_TOKENS + CHARS
    if vocab < len(base):
        raise ValueError(f"teacher vocab {vocab} is below the {len(base)} tokens of the character-level tokenizer")
    vocab_map = {tok: i for i, tok in enumerate(base + [f"<|f{i}|>" for i in range(vocab - len(base))])}
    tokenizer = Tokenizer(BPE(vocab=vocab_map, merges=[], unk_token=UNK))  # no merges: character-level
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    return tokenizer


def write_teacher(out: Path, shape: TeacherShape, max_positions: int) -> Path:
    """A Hugging Face folder with config.json and the tokenizer (with chat template), no weights."""
    from transformers import LlamaConfig

    from potstill.pipelines.arithmetic.teacher_build import END, PAD, save_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = teacher_tokenizer(shape.vocab)
    save_tokenizer(tokenizer, out)
    cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(tok_cfg | {"model_max_length": max_positions}, indent=2))
    LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim, max_position_embeddings=max_positions, rms_norm_eps=1e-5,
        rope_parameters={"rope_theta": shape.rope_theta, "rope_type": "default"},
        tie_word_embeddings=shape.tied, bos_token_id=None,
        eos_token_id=tokenizer.token_to_id(END), pad_token_id=tokenizer.token_to_id(PAD),
    ).save_pretrained(out)
    (out / "proof_shape.json").write_text(json.dumps(asdict(shape)))
    return out


def student_config(shape: StudentShape, max_positions: int) -> Any:
    """A transformers `Qwen2Config` of `shape` (tied embeddings, as Qwen2-1.5B)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        max_position_embeddings=max_positions, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"}, use_cache=False,
    )
