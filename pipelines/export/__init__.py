"""Data-flow step 7, export: committed runs -> datasets other trainers read (TRL, ShareGPT, OpenAI), decontaminated.

`formats` (trace rows -> chat formats, where the reasoning goes), `filters`
(row filters, best-of-k per prompt), `decontaminate` (word n-gram overlap)
and `benchmarks` (the benchmark files it indexes), `plan` (pass 1: every row
decided, shards cut), `writer` (pass 2: staged shards, publish, card last),
`card` (the README.md dataset card) and `run_export` (`potstill export`,
`potstill decontaminate`). Reading committed runs is `output.reader`.
"""
