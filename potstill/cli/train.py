"""`potstill train CONFIG.yaml [--verbose]`: distill a student from committed traces with Ray Train (live progress line), then
score it on held-out prompts when the config has `eval.prompts` (`potstill.pipelines.jobs.evaluate.evaluate_student`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from potstill.cli.common import VerboseOption, console, fail, print_json


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The human summary of a `run_training` result."""
    m = s.get("metrics") or {}
    eff = s.get("packing_efficiency")
    resumed = [a for a in s.get("attempts", []) if a.get("resumed")]
    restarts = f" · resumed {len(resumed)}x (at steps {', '.join(str(a['start_step']) for a in resumed)})" if resumed else ""
    return [
        f"trained {s['name']}: {s['steps']} steps ({s['strategy']}, {s['workers']} workers, "
        f"{'GPU' if s['use_gpu'] else 'CPU'}) in {s['elapsed_s']:.0f} s{restarts}",
        f"traces {s['traces'] if s['traces'] is not None else 'streamed'} · packed rows {s['packed_rows'] or 'streamed'} · "
        f"packing efficiency {eff:.1%}" if eff is not None else "packing efficiency n/a",
        f"final loss {m.get('loss', float('nan')):.4f} (sft {m.get('sft_loss', float('nan')):.4f}, "
        f"kd {m.get('kd_loss', float('nan')):.4f}) · KD {'on, top-' + str(s['topk_width']) if s['topk_width'] else 'off'}",
        f"student: {s['student']}",
    ] + ([f"student accuracy {e['accuracy']:.1%} ({e['correct']}/{e['n']}, {e['method']} verifier) on held-out "
          f"{e['prompts']}"] if (e := s.get("eval")) else [])


def _score(cfg: Any, student: str) -> dict[str, Any]:
    """`eval:` of the config: the trained student in vLLM on held-out prompts; a failure keeps the student."""
    from potstill.pipelines.jobs.evaluate import evaluate_student

    console.print(f"scoring {student} on {cfg.eval.prompts} ...", highlight=False)
    e = cfg.eval
    again = (f"potstill eval {student} {e.prompts} --prompt-field {e.prompt_field} --reference-field {e.reference_field} "
             f"--method {e.method} --max-tokens {e.max_tokens}")
    try:
        return evaluate_student(cfg, student)
    except ValueError as exc:
        fail(f"{exc}\nThe student is saved at {student}; fix eval: and score it with `{again}`.")
    except Exception as exc:  # noqa: BLE001 - training succeeded: say so, and how to score again
        fail(f"scoring the student failed: {type(exc).__name__}: {exc}\nThe student is saved at {student}; "
             f"score it with `{again}`.", 1)


def train(
    config: Path = typer.Argument(..., help="Training config YAML (see examples/distill_arithmetic.yaml)."),
    run: Optional[list[str]] = typer.Option(None, "--run", help="Generation run root to train on (repeatable); overrides data.runs."),
    name: Optional[str] = typer.Option(None, "--name", help="Job name; re-using one resumes from its latest checkpoint."),
    storage_path: Optional[str] = typer.Option(None, "--storage-path", help="Checkpoint root (folder or s3://); overrides checkpoint.storage_path."),
    follow: bool = typer.Option(False, "--follow", help="Train on a live run as its shards commit (data.follow)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    verbose: bool = VerboseOption,
) -> None:
    """Distill a student from committed traces with Ray Train; re-running the same name resumes."""
    from potstill.cli.session import command_session
    from potstill.cli.views import training_view
    from potstill.pipelines.jobs.run_training import run_training
    from potstill.pipelines.observe.redact import install_redaction
    from potstill.schemas import ConfigError, load_config
    from potstill.schemas.training import TrainingConfig

    overrides = {"data.runs": run or None, "name": name, "checkpoint.storage_path": storage_path,
                 "data.follow": True if follow else None}
    try:
        cfg = load_config(config, TrainingConfig, overrides)
    except ConfigError as exc:
        fail(str(exc))
    install_redaction(cfg.model_dump())  # log records and error lines of this driver carry no config secret
    with command_session("train", cfg.checkpoint.storage_path, json_out=json_out, verbose=verbose,
                         storage=cfg.data.storage, config=cfg.model_dump()) as session:
        with session.phase("starting", "steps", "trained") as phase:
            try:
                summary = run_training(cfg, address=address, on_progress=training_view(phase))
            except ValueError as exc:  # configuration and data problems: one clear line each
                fail(str(exc))
            except Exception as exc:  # noqa: BLE001 - Ray Train wraps worker errors; show the cause, keep checkpoints
                cause = getattr(exc, "cause", None) or exc
                fail(f"{type(cause).__name__}: {cause}\nCheckpoints are kept; re-run the same command to resume "
                     f"(the log: {session.log_path}).", 1)
        if cfg.eval.prompts is not None:
            with session.phase("scoring the student", "prompts", "scored"):
                summary["eval"] = _score(cfg, summary["student"])
        if json_out:
            print_json(summary)
            return
        for line in summary_lines(summary):
            session.print(line)
