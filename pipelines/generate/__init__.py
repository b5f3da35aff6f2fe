"""Data-flow steps 2-4, generation: plan work units, run them on teacher replicas, supervise, verify.

`plan` (prompts -> deterministic units and shard ids), `unit_runner` (one unit:
n samples per prompt, `<think>` split by `reasoning`, verification, rejection
sampling), `replicas` (the controller's bookkeeping per replica), `supervision`
(who is blamed for a failure; poison-prompt bisection) and `controller` (the
scheduling loop). Nothing here starts Ray: the Ray side lives in `potstill.cluster`
and `potstill.actors`.
"""
