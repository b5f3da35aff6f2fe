"""Data-flow step 1, prompts in: read JSONL/Parquet sources (local or s3://), validate each row, report bad rows.

    for record in iter_prompts(cfg.prompts, cfg.output.storage, report): ...

`sources` streams raw rows, `rows` turns one into a `PromptRecord` or a `RowError`,
`report` collects what was rejected (written to `errors/ingest.jsonl`), and
`prompts` ties them together (and makes the built-in `arithmetic:` prompts).
"""
