"""Model shapes for planning: parameter counts, layer widths, FLOPs and KV cache per token.

    shape = shape_from_config(json.load(open("config.json")), name="my-model")
    shape = known_shape("Qwen/Qwen2.5-32B-Instruct")            # published models, matched by name or folder name
    shape.params, shape.kv_bytes_per_token(), shape.train_flops_per_token(context=2048)

Dense decoders (Llama, Qwen2, Qwen3, Mistral) and DeepSeek-V3-style models
(multi-head latent attention, mixture of experts) are counted from their
config.json fields; `KNOWN` holds the published config.json numbers of the
models the recipes use, for planning where their folder is not readable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    """What planning needs of a model's architecture."""

    name: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool = False
    qkv_bias: bool = False
    weight_bytes: float = 2.0
    """Bytes per parameter of the stored (served) weights: 2 for bf16, 1 for fp8."""
    # multi-head latent attention (DeepSeek-V3 / R1)
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    # mixture of experts
    routed_experts: int = 0
    shared_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    dense_layers: int = 0
    """Leading layers with a dense MLP in a mixture-of-experts model."""

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0

    def attention_params(self) -> int:
        h = self.hidden
        if self.mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * self.heads * qk if self.q_lora_rank \
                else h * self.heads * qk
            kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank \
                + self.kv_lora_rank * self.heads * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv + self.heads * self.v_head_dim * h
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        bias = q + 2 * kv if self.qkv_bias else 0
        return h * q + 2 * h * kv + q * h + bias

    def mlp_params(self, layer: int, active: bool = False) -> int:
        h = self.hidden
        if not self.routed_experts or layer < self.dense_layers:
            return 3 * h * self.intermediate
        experts = self.experts_per_token if active else self.routed_experts
        return (experts + self.shared_experts) * 3 * h * self.moe_intermediate + self.routed_experts * h

    def layer_params(self, layer: int = 0, active: bool = False) -> int:
        return self.attention_params() + self.mlp_params(layer, active) + 2 * self.hidden

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        """All parameters."""
        return sum(self.layer_params(i) for i in range(self.layers)) + self.embedding_params() + self.hidden

    @property
    def active_params(self) -> int:
        """Parameters one token computes with (all of them for a dense model)."""
        return sum(self.layer_params(i, active=True) for i in range(self.layers)) + self.embedding_params() + self.hidden

    def max_layer_params(self) -> int:
        return max(self.layer_params(i) for i in range(self.layers))

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV cache of one token, all layers (MLA: the compressed latent and the rotary key)."""
        if self.mla:
            return self.layers * (self.kv_lora_rank + self.qk_rope_head_dim) * dtype_bytes
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def train_flops_per_token(self, context: float) -> float:
        """Model FLOPs of one trained token (forward + backward): 6 x active parameters (the embedding lookup is
        free) plus causal attention over `context` earlier positions on average."""
        matmul_params = self.active_params - self.vocab * self.hidden * (0 if self.tied else 1)
        attn_width = self.heads * (self.v_head_dim or self.head_dim)
        return 6 * matmul_params + 12 * self.layers * context * attn_width

    def activation_elements_per_token(self) -> int:
        """Elements one decoder layer keeps per token for backward (norm inputs, q/k/v and rotated q/k, attention
        output, MLP gate, up, activation and product); flash/SDPA attention keeps no scores."""
        q = self.heads * (self.v_head_dim or self.head_dim)
        kv = self.kv_heads * self.head_dim if not self.mla else self.kv_lora_rank
        inter = self.moe_intermediate * (self.experts_per_token + self.shared_experts) if self.routed_experts else self.intermediate
        return 4 * self.hidden + 3 * q + 3 * kv + 4 * inter


def shape_from_config(config: dict[str, Any], name: str = "model", weight_bytes: float | None = None) -> ModelShape:
    """The shape of a Hugging Face config.json (dense decoders and DeepSeek-V3-style MLA/MoE models)."""
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        shape = ModelShape(
            name=name, vocab=int(config["vocab_size"]), hidden=hidden, layers=int(config["num_hidden_layers"]),
            heads=heads, kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads), intermediate=int(config["intermediate_size"]),
            tied=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            kv_lora_rank=int(config.get("kv_lora_rank") or 0), q_lora_rank=int(config.get("q_lora_rank") or 0),
            qk_nope_head_dim=int(config.get("qk_nope_head_dim") or 0), qk_rope_head_dim=int(config.get("qk_rope_head_dim") or 0),
            v_head_dim=int(config.get("v_head_dim") or 0), routed_experts=int(config.get("n_routed_experts") or 0),
            shared_experts=int(config.get("n_shared_experts") or 0), experts_per_token=int(config.get("num_experts_per_tok") or 0),
            moe_intermediate=int(config.get("moe_intermediate_size") or 0),
            dense_layers=int(config.get("first_k_dense_replace") or 0),
        )
    except KeyError as exc:
        raise ValueError(f"{name}: config.json has no {exc.args[0]!r}; it is not a decoder config potstill can plan") from None
    if weight_bytes is None:
        quant = (config.get("quantization_config") or {}).get("quant_method")
        dtype = str(config.get("dtype") or config.get("torch_dtype") or "bfloat16")
        weight_bytes = 1.0 if quant == "fp8" else 4.0 if dtype == "float32" else 2.0
    return replace(shape, weight_bytes=weight_bytes)


def _dense(name: str, vocab: int, hidden: int, layers: int, heads: int, kv: int, inter: int, tied: bool = False,
           bias: bool = False, head_dim: int | None = None) -> ModelShape:
    return ModelShape(name, vocab, hidden, layers, heads, kv, head_dim or hidden // heads, inter, tied, bias)


KNOWN: dict[str, ModelShape] = {s.name: s for s in (
    _dense("Qwen/Qwen2.5-0.5B-Instruct", 151936, 896, 24, 14, 2, 4864, tied=True, bias=True),
    _dense("Qwen/Qwen2.5-1.5B-Instruct", 151936, 1536, 28, 12, 2, 8960, tied=True, bias=True),
    _dense("Qwen/Qwen2.5-Math-1.5B", 151936, 1536, 28, 12, 2, 8960, tied=True, bias=True),
    _dense("Qwen/Qwen2.5-3B-Instruct", 151936, 2048, 36, 16, 2, 11008, tied=True, bias=True),
    _dense("Qwen/Qwen2.5-7B-Instruct", 152064, 3584, 28, 28, 4, 18944, bias=True),
    _dense("Qwen/Qwen2.5-Math-7B", 152064, 3584, 28, 28, 4, 18944, bias=True),
    _dense("Qwen/Qwen2.5-14B-Instruct", 152064, 5120, 48, 40, 8, 13824, bias=True),
    _dense("Qwen/Qwen2.5-32B-Instruct", 152064, 5120, 64, 40, 8, 27648, bias=True),
    _dense("Qwen/QwQ-32B", 152064, 5120, 64, 40, 8, 27648, bias=True),
    _dense("Qwen/Qwen2.5-72B-Instruct", 152064, 8192, 80, 64, 8, 29568, bias=True),
    _dense("Qwen/Qwen3-8B", 151936, 4096, 36, 32, 8, 12288, head_dim=128),
    _dense("Qwen/Qwen3-32B", 151936, 5120, 64, 64, 8, 25600, head_dim=128),
    _dense("meta-llama/Llama-3.1-8B-Instruct", 128256, 4096, 32, 32, 8, 14336),
    _dense("meta-llama/Llama-3.3-70B-Instruct", 128256, 8192, 80, 64, 8, 28672),
    _dense("mistralai/Mistral-7B-Instruct-v0.3", 32768, 4096, 32, 32, 8, 14336),
    ModelShape("deepseek-ai/DeepSeek-R1", 129280, 7168, 61, 128, 128, 128, 18432, weight_bytes=1.0,
               kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
               routed_experts=256, shared_experts=1, experts_per_token=8, moe_intermediate=2048, dense_layers=3),
)}
KNOWN["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"] = replace(KNOWN["Qwen/Qwen2.5-Math-1.5B"], name="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", tied=False)
KNOWN["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"] = replace(KNOWN["Qwen/Qwen2.5-Math-7B"], name="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
KNOWN["deepseek-ai/DeepSeek-R1-Distill-Llama-70B"] = replace(KNOWN["meta-llama/Llama-3.3-70B-Instruct"], name="deepseek-ai/DeepSeek-R1-Distill-Llama-70B")


def known_shape(name: str) -> ModelShape | None:
    """The published shape whose name, or name after the last '/', equals `name`'s last path component
    (case-insensitive): `s3://b/models/Qwen2.5-32B-Instruct` finds `Qwen/Qwen2.5-32B-Instruct`."""
    if name in KNOWN:
        return KNOWN[name]
    tail = name.rstrip("/").rsplit("/", 1)[-1].lower()
    for key, shape in KNOWN.items():
        if key.lower() == name.lower() or key.rsplit("/", 1)[-1].lower() == tail:
            return shape
    return None
