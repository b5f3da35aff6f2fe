"""Distillation (DESIGN.md step 6): committed traces -> tokenized, packed sequences -> Ray Train -> student.

    potstill train CONFIG.yaml   # runs `train_job.run_training`

Modules, one job each: `tokenize` (trace row -> ids and shifted labels with the
student's chat template), `packing` (documents -> fixed-size sequences with
per-document positions), `losses` (completion-only CE and sparse top-k KD),
`schedule` (learning-rate schedule), `student` (build/load/save the student),
`train_loop` (the per-worker step and loop) and `train_job` (the Ray driver).
Nothing here imports torch, ray or transformers at module import.
"""
