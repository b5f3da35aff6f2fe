"""The terminal of a scoring command (`potstill eval`, `potstill teacher demo`): one session, one live line.

    run_scoring("eval", len(items), lambda progress: evaluate(model, items, on_completion=progress), result_lines,
                what=model, json_out=json_out, verbose=verbose)

vLLM's engine start-up and its own progress bar go to the command's log file
(`~/.cache/potstill/logs/<command>-<time>.log`, its path printed first), as
for `generate` and `train`; the terminal shows a live line while the model
scores (prompts done out of all), then the result lines (or, with `--json`, stdout holds the one object).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.markup import escape

from potstill.cli.common import fail, print_json


def sample_lines(result: dict[str, Any], prompt_label: str, completion_label: str) -> list[str]:
    """The scored sample's prompt and completion, as text (a `[b]` in a completion is not markup)."""
    sample = result["sample"]
    return [f"[bold]{prompt_label}[/]: {escape(sample['prompt'])}",
            f"[bold]{completion_label}[/]:\n{escape(sample['completion'])}"]


def run_scoring(command: str, prompts: int, score: Callable[[Callable[[int], None]], dict[str, Any]],
                result_lines: Callable[[dict[str, Any]], list[str]], *, what: str, json_out: bool,
                verbose: bool) -> None:
    """Run `score(progress)` inside a command session and show its result; `progress(done)` moves the live line.
    Bad input (ValueError, OSError) is one line naming `what`."""
    from potstill.cli.session import command_session

    with command_session(command, None, json_out=json_out, verbose=verbose) as session:
        phase = session.next_phase("starting vLLM", "prompts", "scored", total=prompts)
        try:
            result = score(lambda done: phase.update(done=done, status="scoring"))
        except (ValueError, OSError) as exc:
            fail(f"{what}: {exc}")
        phase.update(done=result["n"], fields=[f"accuracy {result['accuracy']:.1%}",
                                               f"{result['output_tokens_per_s'] or 0:,.0f} tok/s"])
        session.end_phase()
        if json_out:
            print_json(result)
            return
        for line in result_lines(result):
            session.print(line)
