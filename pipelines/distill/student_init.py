"""Build the student a worker trains: sharded from the meta device for pretrained students under FSDP.

    model = build_trainable(cfg, tokenizer, device)    # in every worker, after torch.distributed is up

A pretrained student (`student.model`, local or s3://) under FSDP is built the
way torchtitan does it: the architecture is instantiated on the meta device (no
memory), wrapped for activation checkpointing, sharded with `fully_shard`
(`parallel.fully_shard_student`), then only this worker's shards are allocated
(`to_empty`) and filled from the safetensors files by
`torch.distributed.checkpoint`'s Hugging Face reader, which reads just the
slices each worker owns. No worker ever holds the whole model. Buffers that
are not in the checkpoint (rotary frequencies) are recomputed by the model's own
initializer. Under DDP (the model is replicated anyway) or in a single
process the whole model is loaded (`student.load_student`); a fresh student is
built in full on every worker from the same seed (fresh students are small).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from potstill.schemas.training import TrainingConfig


def state_key(name: str) -> str:
    """The state-dict key of a parameter name of a (DDP- or checkpoint-wrapped) `StudentWithLoss`."""
    name = name.replace("_checkpoint_wrapped_module.", "")
    return name[len("module."):] if name.startswith("module.") else name


def tied_aliases(model: Any) -> set[str]:
    """State-dict keys that name a parameter already named by an earlier key (tied embeddings)."""
    seen: set[int] = set()
    aliases: set[str] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            aliases.add(state_key(name))
        seen.add(id(param))
    return aliases


def hf_key(name: str) -> str:
    """The Hugging Face checkpoint key of a `StudentWithLoss` state-dict key."""
    return name[len("lm."):] if name.startswith("lm.") else name


def load_hf_weights(model: Any, folder: str) -> None:
    """Fill `model` (a sharded or plain `StudentWithLoss`) from the safetensors files of `folder`; every worker
    reads only the slices of its own shards."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    # The (sharded) parameters themselves, not copies: DCP fills this worker's shards in place.
    state = get_model_state_dict(model)
    skip = tied_aliases(model)
    wanted = {hf_key(k): v for k, v in state.items() if k not in skip}
    reader = HuggingFaceStorageReader(folder)
    stored = set(reader.read_metadata().state_dict_metadata)
    missing = sorted(set(wanted) - stored)
    if missing:
        raise ValueError(f"student.model {folder}: the safetensors files have no {missing[:3]} ({len(missing)} weights "
                         "missing); is it a complete Hugging Face checkpoint of this architecture?")
    dcp.load(wanted, storage_reader=HuggingFaceStorageReader(folder))


def init_non_persistent_buffers(lm: Any) -> None:
    """Recompute the buffers a checkpoint does not hold (rotary inverse frequencies) after `to_empty`."""
    owners = {name.rpartition(".")[0] for name, _ in lm.named_non_persistent_buffers()}
    for owner in owners:
        lm._init_weights(lm.get_submodule(owner))


def build_trainable(cfg: "TrainingConfig", tokenizer: Any, device: "torch.device", precision: str) -> Any:
    """The `StudentWithLoss` this worker trains, on `device`, wrapped for `cfg.strategy` (see module docstring)."""
    import torch

    from potstill.pipelines.distill.loss_model import StudentWithLoss
    from potstill.pipelines.distill.parallel import apply_activation_checkpointing, distributed, fully_shard_student, wrap_model
    from potstill.pipelines.distill.student import attn_implementation, check_vocab, load_student

    s = cfg.strategy
    if cfg.student.model is None or s.kind != "fsdp" or not distributed():
        lm = load_student(cfg.student, tokenizer, cfg.packing.max_tokens, cfg.run.seed, cfg.data.storage, device.type)
        return wrap_model(StudentWithLoss(lm), s.kind, device, precision, s.activation_checkpointing, s.cpu_offload)

    from transformers import AutoConfig, AutoModelForCausalLM

    from potstill.pipelines.distill.student_files import local_model_dir

    folder = local_model_dir(cfg.student.model, cfg.data.storage)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation(cfg.student, device.type),
                                              dtype=torch.float32)
    check_vocab(cfg.student, lm.get_input_embeddings().num_embeddings, tokenizer)
    model = StudentWithLoss(lm)
    if s.activation_checkpointing:
        apply_activation_checkpointing(lm)
    fully_shard_student(model, lm, device, precision, s.cpu_offload)
    model.to_empty(device="cpu" if s.cpu_offload else device)
    init_non_persistent_buffers(lm)
    load_hf_weights(model, folder)
    return model
