"""Planning: what a job needs before it runs (`potstill plan CONFIG.yaml`), pure arithmetic over shapes and hardware.

`hardware` (GPU memory and peak FLOP/s), `shapes` (a model's parameter count,
layer widths and KV cache per token, from its config.json or a table of
published models), `train_plan` (per-GPU memory of a training job, tokens,
steps, time at a stated MFU and cost), `generate_plan` (teacher replicas that
fit, KV cache per replica, tokens/s at a stated per-GPU rate), `inputs` (where
`potstill plan` finds a config's model shape and data size). Nothing here
imports torch, ray or transformers.
"""
