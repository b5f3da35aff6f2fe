"""Data-flow step 5, output: storage (local or S3), shard writing, the exactly-once commit protocol, run records.

`storage` (one S3 stack and retry policy for everything potstill reads and
writes), `shard_writer` (Parquet with a streaming checksum, verified after the
write), `commit` (conditional-create commits, manifest, `_SUCCESS`, gc),
`shard_output` (write + commit one unit), `run_record` (`run.json`) and
`inspect_run` (what a run produced).
"""
