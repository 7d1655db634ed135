"""Root Typer app; each command group lives in its own module."""

from __future__ import annotations

import typer

from constitutional_guard import __version__
from constitutional_guard.cli import (
    bench_cmd,
    classifier_cmd,
    data_cmd,
    demo_cmd,
    eval_cmd,
    guard_cmd,
    models_cmd,
    probe_cmd,
    serve_cmd,
)
from constitutional_guard.cli.common import configure_library_output, console, exit_on_input_error

app = typer.Typer(
    name="cguard",
    help="Constitutional Guard: constitutional classifiers and guarded generation for open-weight LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def options(
    verbose: bool = typer.Option(
        False,
        "--verbose/--quiet",
        "-v/-q",
        help="Show the progress bars and info logs of transformers, huggingface_hub and datasets.",
    ),
) -> None:
    """Constitutional Guard: constitutional classifiers and guarded generation for open-weight LLMs."""
    configure_library_output(verbose)


app.add_typer(models_cmd.app, name="models")
app.add_typer(data_cmd.app, name="data")
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(classifier_cmd.app, name="classifier")
app.command("classify")(classifier_cmd.classify)
app.add_typer(probe_cmd.app, name="probe")
app.command("demo")(demo_cmd.demo)
app.add_typer(guard_cmd.app, name="guard")
app.command("generate")(guard_cmd.generate)
app.command("serve")(serve_cmd.serve)
app.command("eval")(eval_cmd.evaluate)


@app.command("version")
def version() -> None:
    """Print the package version."""
    console.print(__version__)


def main() -> None:
    with exit_on_input_error():
        app()
