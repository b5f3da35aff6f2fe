"""The student as the trainer runs it: a causal LM's decoder and the chunked loss in one forward.

    model = StudentWithLoss(AutoModelForCausalLM.from_pretrained(folder))
    loss, sft_sum, kd_sum = model(input_ids, position_ids, labels, topk_ids, topk_logprobs,
                                  scales=LossScales(sft=..., kd=...), temperature=1.0)

The loss needs the output projection's weight, and both parallel wrappers only
manage a parameter inside their module's forward: FSDP2 gathers the root's
parameters (output projection, final norm) for the root forward and reduces
their gradients after it, DDP syncs what its forward used. So the output
projection, completion-only CE and sparse top-k KD run in this module's
forward, over the labelled positions only and chunk by chunk
(`chunked_loss.linear_loss`): no [tokens x vocab] logits tensor exists.
Packed documents stay apart: the decoder is called with per-document
`position_ids` and no attention mask (see `packing.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill.chunked_loss import LossScales, linear_loss
from potstill.pipelines.distill.tokenize import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

UNSUPPORTED_HEAD = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")
"""Config keys of architectures whose logits are not a plain projection of the last hidden state."""


def check_plain_head(lm: Any) -> None:
    """Raise when the model's logits are not `hidden @ lm_head.weight.T` (what the chunked loss computes)."""
    head = lm.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise ValueError(f"student {type(lm).__name__}: the chunked loss needs an output projection without bias; "
                         "this architecture is not supported as a student")
    for key in UNSUPPORTED_HEAD:
        if getattr(lm.config, key, None) not in (None, 0, 1, 1.0):
            raise ValueError(f"student {type(lm).__name__} transforms its logits ({key}={getattr(lm.config, key)}); "
                             "the chunked loss computes plain logits, so this architecture is not supported as a student")


def _nn_module() -> type:
    import torch

    class StudentWithLoss(torch.nn.Module):
        """`lm`'s decoder, output projection and distillation loss (see module docstring)."""

        def __init__(self, lm: Any):
            super().__init__()
            check_plain_head(lm)
            self.lm = lm

        def forward(self, input_ids: "torch.Tensor", position_ids: "torch.Tensor", labels: "torch.Tensor",
                    topk_ids: "torch.Tensor | None" = None, topk_logprobs: "torch.Tensor | None" = None, *,
                    scales: LossScales, temperature: float = 1.0, chunk_tokens: int | None = None):
            # position_ids with attention_mask=None and no cache: per-document attention (see packing.py)
            hidden = self.lm.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
            keep = labels != IGNORE_INDEX
            ids = topk_ids[keep] if topk_ids is not None else None
            lps = topk_logprobs[keep] if topk_logprobs is not None else None
            return linear_loss(hidden[keep], self.lm.get_output_embeddings().weight, labels[keep], ids, lps, scales,
                               temperature, chunk_tokens)

    StudentWithLoss.__module__, StudentWithLoss.__qualname__ = __name__, "StudentWithLoss"
    return StudentWithLoss


def __getattr__(name: str) -> Any:
    # Built on first use, so importing this module does not import torch.
    if name == "StudentWithLoss":
        globals()[name] = cls = _nn_module()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def bare_lm(model: Any) -> Any:
    """The Hugging Face causal LM inside a (DDP-wrapped) `StudentWithLoss`, or `model` itself."""
    inner = getattr(model, "module", model)
    return getattr(inner, "lm", inner)
