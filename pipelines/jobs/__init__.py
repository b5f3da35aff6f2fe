"""The drivers: the only modules under `pipelines/` that start Ray, a vLLM engine or a trainer.

`run_generation` (the generation job), `run_training` with `train_worker` and
`train_dataset` (the Ray Train distillation job), `evaluate` (score a model in
vLLM with the verifiers), `teacher_demo` and `run_demo` (the whole loop on the
shipped teacher), `read_runs_ray` (committed runs as a Ray Dataset, behind
`read_run(...).to_ray()`).
"""
