"""Data-parallel strategies of the training loop: DDP or FSDP (torch FSDP2), one interface for both.

    model = wrap_model(model, "fsdp", device)            # in every worker, after torch.distributed is up
    with grad_sync(model, enabled=is_last_micro_batch): loss.backward()
    norm = clip_grad_norm(model, max_norm)
    model_sd, optim_sd = full_state(model, optimizer)    # collective; full tensors on CPU, FQN-keyed
    load_full_state(model, optimizer, model_sd, optim_sd)

DDP replicates the model and all-reduces gradients; FSDP shards parameters, gradients and optimizer state over
the workers (`torch.distributed.fsdp.fully_shard` per decoder layer and at the
root), which is what a student too big for one device needs. Both average
gradients over workers, so the loss scaling of `train_step` holds for both.
Checkpoints use `torch.distributed.checkpoint.state_dict` full state dicts,
which are the same for both strategies (and for a single process): a run can
resume under the other strategy or a different worker count.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

STRATEGIES = ("ddp", "fsdp")


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def is_fsdp(model: Any) -> bool:
    """True for a module sharded by `fully_shard` (FSDP2)."""
    return hasattr(model, "set_requires_gradient_sync")


def wrap_model(model: Any, kind: str, device: "torch.device") -> Any:
    """The model prepared for `kind` ("ddp" or "fsdp") on `device`; unchanged outside torch.distributed."""
    if kind not in STRATEGIES:
        raise ValueError(f"strategy.kind={kind!r} is not one of {STRATEGIES}; set strategy.kind: ddp or fsdp")
    model = model.to(device)
    if not _distributed():
        return model
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import torch.distributed as dist

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in _decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _decoder_layers(model: Any) -> list[Any]:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    return list(layers) if layers is not None else []


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


def _options(load: bool = False) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Saving gathers full tensors to CPU on rank 0 only (the other ranks get {}); loading gives every rank the full dict.
    return StateDictOptions(full_state_dict=True, cpu_offload=not load)


def full_state(model: Any, optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model, optimizer) full state dicts on CPU keyed by parameter name, on rank 0 ({} elsewhere); every
    worker must call it (a collective under FSDP)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, optimizer, options=_options())


def full_model_state(model: Any) -> dict[str, Any]:
    """The model's full state dict on CPU on rank 0 ({} elsewhere); every worker must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def load_full_state(model: Any, optimizer: Any, model_state: dict[str, Any], optim_state: dict[str, Any]) -> None:
    """Load what `full_state` returned into a wrapped (or bare) model and its optimizer."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=_options(load=True))
