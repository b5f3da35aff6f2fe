"""Distillation (DESIGN.md step 6): committed traces -> tokenized, packed sequences -> Ray Train -> student.

    potstill train CONFIG.yaml   # runs `jobs.run_training.run_training`

Modules, one job each: `run_data` (which committed files to read: manifests,
or commits of a live run), `tokenize` (trace row -> ids and shifted labels
with the student's chat template; both top-k layouts decoded), `packing`
(documents -> fixed-size sequences with per-document positions), `dataset`
(filter, tokenize and pack one group of rows; each run's layout), `global_order`
(the same rows per optimizer step on any worker count), `local_reader` and
`follow` (the per-worker reader and round-by-round follower of live runs),
`losses` (completion-only CE and sparse top-k KD over full logits: the
reference), `chunked_loss` (the same losses and their gradients chunk by chunk
with the output projection: no [tokens x vocab] tensor), `loss_model` (the
student and its loss in one forward), `student` (tokenizers, fresh students,
whole-model loading), `student_files` (local or s3:// student folders),
`student_init` (sharded from the meta device, loaded shard by shard),
`parallel` (DDP or FSDP2 with mixed precision, activation checkpointing, CPU
offload), `schedule` (learning-rate schedule), `train_loop` (the
framework-light step and loop), `checkpointing` and `checkpoint_storage`
(torch distributed checkpoints through the storage stack), `hf_export` (the
streamed Hugging Face export), `progress` (live progress to the driver),
`cpu_binding` and `faults` (the failure test hook). The Ray Train driver and
worker are `jobs/run_training.py` and `jobs/train_worker.py`. Nothing here
imports torch, ray or transformers at module import.
"""
