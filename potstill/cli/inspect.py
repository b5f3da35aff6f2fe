"""`potstill inspect OUT`: what a run produced."""

from __future__ import annotations

from typing import Optional

import typer

from potstill.cli.common import EndpointOption, console, fail, print_json, reserve_stdout_for_json, storage_from


def inspect(
    out: str = typer.Argument(..., help="Run output root (local folder or s3://...)."),
    endpoint_url: Optional[str] = EndpointOption,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Print a run's totals, accepted fraction, token statistics and a sample trace."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.pipelines.output.inspect_run import inspect_run

    try:
        info = inspect_run(out, storage_from(endpoint_url))
    except FileNotFoundError as exc:
        fail(str(exc))
    if json_out:
        print_json(info)
        return
    t = info["totals"]
    state = "finished" if info["finished"] else "in progress (no _SUCCESS yet)"
    acc = info["accepted_fraction"]
    console.print(f"[bold]{info['run_id']}[/] at {info['uri']}: {state}", highlight=False)
    console.print(f"shards {info['shards']} · prompts {t['prompts']} · traces {t['traces']} · verified {t['verified']}"
                  f" ({'n/a' if acc is None else f'{acc:.1%}'}) · failed prompts {info['failed_prompts']}", highlight=False)
    ct = info["completion_tokens"]
    if ct:
        console.print(f"completion tokens: mean {ct['mean']:.1f} · p50 {ct['p50']:.0f} · p90 {ct['p90']:.0f} · "
                      f"p99 {ct['p99']:.0f} · max {ct['max']:.0f} · total {t['completion_tokens']}", highlight=False)
    s = info["sample"]
    if s:
        console.print(f"[bold]sample[/] {s['prompt_id'][:12]}…#{s['sample_index']} (verified={s['verified']}, "
                      f"{s['finish_reason']}):", highlight=False)
        console.print(f"  user: {s['messages'][-1]['content']}", highlight=False)
        console.print("  " + s["completion"].replace("\n", "\n  "), highlight=False)
