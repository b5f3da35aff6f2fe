"""Distillation (DESIGN.md step 6): committed traces -> tokenized, packed sequences -> Ray Train -> student.

    potstill train CONFIG.yaml   # runs `potstill.pipelines.jobs.run_training.run_training`

Modules, one job each: `run_data` (which committed files to read: manifests,
or commits of a live run), `tokenize` (trace row -> ids and shifted labels
with the student's chat template), `packing` (documents -> fixed-size
sequences with per-document positions), `dataset` (the pure parts of the
training data: which runs, which rows, how a group packs), `local_reader` and
`follow` (the per-worker reader and round-by-round follower of live runs),
`losses` (completion-only CE and sparse top-k KD), `schedule` (learning-rate
schedule), `student` (build/load/save the student), `parallel` (DDP or FSDP
behind one interface), `train_loop` (the framework-light step and loop),
`checkpointing` (what a checkpoint holds), `progress` (live progress to the
driver) and `faults` (the failure test hook). The Ray side lives in
`potstill.pipelines.jobs`: `run_training` (the driver), `train_dataset` (the
Ray Data pipeline) and `train_worker` (the Ray Train worker function).
Nothing here imports torch, ray or transformers at module import.
"""
