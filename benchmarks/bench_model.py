"""A random-weight Llama for throughput benchmarks (speed does not depend on the weights).

    python -m benchmarks.bench_model OUT_DIR

It reuses the shipped teacher's character-level tokenizer and chat template
and allows 1,024 positions, so requests can ask for 512 tokens.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def build_random_llama(out_dir: str | Path, *, hidden: int = 128, layers: int = 2, heads: int = 2,
                       max_positions: int = 1024, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from potstill.pipelines.models.assets import resolve_model
    from potstill.schemas.generation import SHIPPED_TEACHER

    out = Path(out_dir)
    teacher = Path(resolve_model(SHIPPED_TEACHER))
    out.mkdir(parents=True, exist_ok=True)
    for f in teacher.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, out / f.name)
    tok = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=((len(tok) + 63) // 64) * 64, hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


if __name__ == "__main__":
    print(build_random_llama(sys.argv[1]))
