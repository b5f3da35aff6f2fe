"""The dataset card (`README.md`) of an export: YAML metadata the Hugging Face Hub reads, then prose.

    text = render_card(summary, schema, pretty_name="arithmetic traces")

The YAML header holds the Hub's own keys (`license`, `pretty_name`,
`task_categories`, `tags`, `size_categories`, `configs` with the data files
of the `train` split, `dataset_info` with features, example and byte
counts: what `datasets.load_dataset(<export folder>)` and the Hub viewer
read) and a `potstill` block: the whole `ExportSummary` (source runs with
teacher, revision, sampling and verifier; filter counts; accepted fraction;
token statistics; decontamination result). The prose repeats the numbers
for people.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import yaml

from potstill.schemas.export import ExportSummary, TokenStats

_DTYPES = {pa.string(): "string", pa.large_string(): "large_string", pa.bool_(): "bool", pa.int8(): "int8",
           pa.int16(): "int16", pa.int32(): "int32", pa.int64(): "int64", pa.float16(): "float16",
           pa.float32(): "float32", pa.float64(): "float64"}


def _feature(name: str, kind: pa.DataType) -> dict[str, Any]:
    """One column in the `datasets` YAML feature syntax."""
    if kind in _DTYPES:
        return {"name": name, "dtype": _DTYPES[kind]}
    if pa.types.is_list(kind) and pa.types.is_struct(kind.value_type):
        return {"name": name, "list": [_feature(f.name, f.type) for f in kind.value_type]}
    if pa.types.is_list(kind) and kind.value_type in _DTYPES:
        return {"name": name, "list": _DTYPES[kind.value_type]}
    raise ValueError(f"column {name!r} has Arrow type {kind}, which the card's feature list does not describe")


def hub_features(schema: pa.Schema) -> list[dict[str, Any]]:
    """`dataset_info.features` for `schema` (the same YAML `datasets` writes)."""
    return [_feature(f.name, f.type) for f in schema]


def size_category(rows: int) -> str:
    """The Hub's `size_categories` bucket for `rows` examples."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if rows < bound:
            return label
    return "n>1T" if rows >= 10**12 else "1B<n<10B" if rows < 10**10 else "10B<n<100B" if rows < 10**11 else "100B<n<1T"


def card_metadata(summary: ExportSummary, schema: pa.Schema, pretty_name: str | None) -> dict[str, Any]:
    """The YAML header as a dict."""
    pattern = f"data/train-*.{summary.file_format}"
    meta: dict[str, Any] = {
        "license": summary.license,
        "pretty_name": pretty_name or f"potstill traces ({summary.format})",
        "task_categories": ["text-generation"],
        "tags": ["potstill", "synthetic", "distillation", "reasoning", summary.format],
        "size_categories": [size_category(summary.rows)],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": pattern}]}],
        "dataset_info": {
            "features": hub_features(schema),
            "splits": [{"name": "train", "num_bytes": summary.text_bytes, "num_examples": summary.rows}],
            "download_size": summary.bytes,
            "dataset_size": summary.text_bytes,
        },
        "potstill": summary.model_dump(mode="json"),
    }
    return meta


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _tokens(name: str, t: TokenStats) -> str:
    if t.mean is None:
        return f"| {name} | 0 | | | | |"
    return f"| {name} | {t.total:,} | {t.mean:.1f} | {t.p50:.0f} | {t.p90:.0f} | {t.max} |"


def _loading(summary: ExportSummary) -> str:
    builder = "json" if summary.file_format == "jsonl" else "parquet"
    lines = ["```python", "from datasets import load_dataset",
             f'ds = load_dataset("{builder}", data_files="<this folder>/data/train-*.{summary.file_format}", split="train")',
             "# or: load_dataset(\"<this folder>\") / the Hub repo id, which reads this card's `configs`"]
    if summary.format in ("trl", "prompt-completion"):
        lines += ["", "from trl import SFTConfig, SFTTrainer",
                  'trainer = SFTTrainer(model="<student>", train_dataset=ds, args=SFTConfig(output_dir="out"))']
    return "\n".join(lines + ["```"])


def card_body(summary: ExportSummary, pretty_name: str | None) -> str:
    """The Markdown after the YAML header."""
    c = summary.counts
    title = pretty_name or f"potstill traces ({summary.format})"
    out = [f"# {title}", "",
           f"{summary.rows:,} teacher traces for {summary.prompts:,} prompts, exported by potstill in the "
           f"`{summary.format}` format (reasoning: `{summary.reasoning}`) as {len(summary.files)} "
           f"{summary.file_format} shard(s), {summary.bytes:,} bytes. Only committed shards of the source runs were read.",
           "", "## Loading", "", _loading(summary), "", "## Source runs", "",
           "| run | teacher | revision | verifier | finished | traces | verified | accepted |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary.runs:
        out.append(f"| `{r.run_id}` | {r.teacher_model or '?'} | {r.teacher_revision or '?'} | {r.verifier or '?'} | "
                   f"{'yes' if r.finished else 'no (live)'} | {r.traces:,} | {r.verified:,} | {_pct(r.accepted_fraction)} |")
    sampling = {r.run_id: r.sampling for r in summary.runs if r.sampling}
    if sampling:
        out += ["", "Sampling:", ""] + [f"- `{k}`: `{v}`" for k, v in sampling.items()]
    out += ["", "## Selection", "",
            f"Rows read {c.rows_read:,}; removed as unverified {c.unverified:,}, by finish reason {c.finish_reason:,}, "
            f"by token length {c.token_length:,}, by decontamination {c.decontaminated:,}, beyond the per-prompt count "
            f"{c.per_prompt:,}; exported {c.exported:,}. Accepted fraction of the source runs: "
            f"{_pct(summary.accepted_fraction)}.", "",
            f"Filters: `{summary.filters.model_dump_json(exclude_none=True)}`", "",
            "## Token statistics (teacher tokens)", "",
            "| | total | mean | p50 | p90 | max |", "| --- | --- | --- | --- | --- | --- |",
            _tokens("prompt", summary.prompt_tokens), _tokens("completion", summary.completion_tokens), "",
            "## Decontamination", ""]
    d = summary.decontamination
    if d is None:
        out.append("Not decontaminated: no benchmark was named (`potstill export ... --against FILE`).")
    else:
        out.append(f"Word {d.ngram}-gram overlap (NFKC, case-folded, punctuation removed) of the {d.scope} against "
                   f"{len(d.benchmarks)} benchmark(s); {d.rows_checked:,} rows checked, {d.prompts_matched:,} prompts and "
                   f"{d.rows_matched:,} rows overlapped, **{d.rows_removed:,} rows removed** from this export.")
        out += ["", "| benchmark | source | texts | prompts matched | traces matched |", "| --- | --- | --- | --- | --- |"]
        out += [f"| {b.name} | `{b.source}` | {b.texts:,} | {b.prompts_matched:,} | {b.traces_matched:,} |"
                for b in d.benchmarks]
    out += ["", "## License", "",
            f"`{summary.license}`. The traces are a teacher model's outputs on the run's prompts: check that the "
            "teacher's and the prompts' licenses allow training on them.", ""]
    return "\n".join(out)


def render_card(summary: ExportSummary, schema: pa.Schema, pretty_name: str | None = None) -> str:
    """The whole README.md."""
    header = yaml.safe_dump(card_metadata(summary, schema, pretty_name), sort_keys=False, allow_unicode=True, width=120)
    return f"---\n{header}---\n\n{card_body(summary, pretty_name)}"
