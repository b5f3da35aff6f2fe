"""The `potstill` command line.

    potstill --help

Each sub-command lives in its own module and imports heavy libraries only
when it runs, so `potstill --help` is instant.
"""

from __future__ import annotations

import typer

from potstill.cli import (
    decontaminate,
    demo,
    eval,
    export,
    gc,
    generate,
    inspect,
    logs,
    plan,
    scale,
    status,
    stop,
    submit,
    teacher,
    train,
)

app = typer.Typer(
    name="potstill",
    help="Distill a teacher model into a student: teacher replicas -> verified traces -> student.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("generate")(generate.generate)
app.command("status")(status.status)
app.command("scale")(scale.scale)
app.command("inspect")(inspect.inspect)
app.command("gc")(gc.gc)
app.command("export")(export.export)
app.command("decontaminate")(decontaminate.decontaminate)
app.command("train")(train.train)
app.command("eval")(eval.eval_model)
app.command("demo")(demo.demo)
app.command("plan")(plan.plan)
app.command("submit")(submit.submit)
app.command("logs")(logs.logs)
app.command("stop")(stop.stop)
app.add_typer(teacher.app, name="teacher")


@app.command("version")
def version() -> None:
    """Print the potstill version."""
    from potstill import __version__

    typer.echo(__version__)


def main() -> None:
    app()
