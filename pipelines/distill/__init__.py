"""Distillation (DESIGN.md step 6): committed traces -> tokenized, packed sequences -> Ray Train -> student.

    potstill train CONFIG.yaml   # runs `train_job.run_training`

Modules, one job each: `run_data` (which committed files to read: manifests,
or commits of a live run), `tokenize` (trace row -> ids and shifted labels
with the student's chat template), `packing` (documents -> fixed-size
sequences with per-document positions), `dataset` (the Ray Data pipeline:
read exactly the listed files, filter, tokenize, pack), `local_reader` and
`follow` (the per-worker reader and round-by-round follower of live runs),
`losses` (completion-only CE and sparse top-k KD), `schedule` (learning-rate
schedule), `student` (build/load/save the student), `parallel` (DDP or FSDP
behind one interface), `train_loop` (the framework-light step and loop),
`checkpointing` (what a checkpoint holds), `worker` (the Ray Train worker
function), `progress` (live progress to the driver), `faults` (the failure
test hook) and `train_job` (the Ray driver). Nothing here imports torch, ray
or transformers at module import.
"""
