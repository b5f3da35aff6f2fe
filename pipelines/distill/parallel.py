"""Data-parallel strategies of the training loop: DDP or FSDP (torch FSDP2), one interface for both.

    model = wrap_model(StudentWithLoss(lm), "fsdp", device, precision="bf16", activation_checkpointing=True)
    with grad_sync(model, enabled=is_last_micro_batch): loss.backward()
    norm = clip_grad_norm(model, max_norm)

DDP replicates the model and all-reduces gradients; FSDP shards parameters,
gradients and optimizer state over the workers, which is what a student too
big for one device needs (torchtitan's recipe): `fully_shard` on every decoder
layer (the last one keeps its parameters gathered after forward, as backward
starts with it), on the input embeddings when they are not tied to the output
projection, and on the root (output projection, final norm). `precision: bf16`
is FSDP2's `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`: the
sharded master weights and the optimizer stay float32, layers compute with bf16
copies gathered per layer, gradients are reduced in float32 (under DDP, where
there is no such policy, bf16 is autocast over float32 weights).
`activation_checkpointing` wraps each decoder layer in torch's
`checkpoint_wrapper` (only the layer inputs are kept for backward);
`cpu_offload` is FSDP2's `CPUOffloadPolicy`. Both strategies average gradients
over workers, so the loss scaling of `train_step` holds for both.
Building a large student without ever materializing it is `student_init.py`;
checkpoints are `checkpointing.py` (DCP: any strategy, any worker count).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

STRATEGIES = ("ddp", "fsdp")


def distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def is_fsdp(model: Any) -> bool:
    """True for a module sharded by `fully_shard` (FSDP2)."""
    return hasattr(model, "set_requires_gradient_sync")


def resolve_precision(precision: str, device: "torch.device") -> str:
    """`fp32` or `bf16` for the configured precision (`auto`: bf16 on GPU, fp32 on CPU, where bf16 matmuls are slow)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast_dtype(kind: str, precision: str) -> "torch.dtype | None":
    """The autocast dtype of the training step: bf16 under DDP in bf16; None otherwise (FSDP casts by policy)."""
    import torch

    return torch.bfloat16 if kind == "ddp" and precision == "bf16" else None


def decoder_layers(lm: Any) -> Any:
    """The `nn.ModuleList` of decoder layers of a Hugging Face causal LM."""
    layers = getattr(lm.get_decoder(), "layers", None)
    if layers is None:
        raise ValueError(f"student {type(lm).__name__} has no decoder `layers` list; FSDP and activation checkpointing "
                         "shard and wrap per decoder layer, so this architecture is not supported as a student")
    return layers


def apply_activation_checkpointing(lm: Any) -> None:
    """Wrap every decoder layer so its activations are recomputed in backward (state-dict keys are unchanged)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    layers = decoder_layers(lm)
    for i, layer in enumerate(layers):
        layers[i] = checkpoint_wrapper(layer, checkpoint_impl=CheckpointImpl.NO_REENTRANT)


def fully_shard_student(model: Any, lm: Any, device: "torch.device", precision: str, cpu_offload: bool) -> Any:
    """Apply FSDP2 to `model` (a `StudentWithLoss` holding `lm`), bottom-up; works on meta and real parameters."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    bf16 = precision == "bf16"
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    # The root's inputs are ids and the teacher's top-k log-probabilities: never cast those to bf16.
    root_policy = MixedPrecisionPolicy(param_dtype=policy.param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    offload = CPUOffloadPolicy(pin_memory=device.type == "cuda") if cpu_offload else OffloadPolicy()
    layers = decoder_layers(lm)
    for i, layer in enumerate(layers):
        fully_shard(layer, mesh=mesh, mp_policy=policy, offload_policy=offload, reshard_after_forward=i < len(layers) - 1)
    embed, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    if embed is not None and head is not None and embed.weight is not head.weight:
        fully_shard(embed, mesh=mesh, mp_policy=policy, offload_policy=offload)
    fully_shard(model, mesh=mesh, mp_policy=root_policy, offload_policy=offload)
    return model


def wrap_model(model: Any, kind: str, device: "torch.device", precision: str = "fp32",
               activation_checkpointing: bool = False, cpu_offload: bool = False) -> Any:
    """A materialized `StudentWithLoss` (or any HF causal LM wrapper) prepared for `kind` on `device`.

    Outside torch.distributed the model is only moved (and checkpoint-wrapped). Large pretrained students are
    built sharded from the start instead (`student_init.build_trainable`).
    """
    from potstill.pipelines.distill.loss_model import bare_lm

    if kind not in STRATEGIES:
        raise ValueError(f"strategy.kind={kind!r} is not one of {STRATEGIES}; set strategy.kind: ddp or fsdp")
    lm = bare_lm(model)
    if activation_checkpointing:
        apply_activation_checkpointing(lm)
    if not distributed() or kind == "ddp":
        model = model.to(device)
        if not distributed():
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if not cpu_offload:
        model = model.to(device)
    return fully_shard_student(model, lm, device, precision, cpu_offload)


@contextmanager
def grad_sync(model: Any, enabled: bool) -> Iterator[None]:
    """Gradient all-reduce/reduce-scatter on (the last micro-batch of a step) or off (the others)."""
    if enabled:
        yield
        return
    if is_fsdp(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
        return
    with model.no_sync() if hasattr(model, "no_sync") else nullcontext():
        yield


def clip_grad_norm(model: Any, max_norm: float | None) -> float:
    """Clip the global gradient norm (all shards) to `max_norm` (None: only measure it); returns the norm before clipping."""
    import torch

    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf"))
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP
        norm = norm.full_tensor()
    return float(norm)
