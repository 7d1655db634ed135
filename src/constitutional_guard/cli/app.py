"""Root Typer app; each command group lives in its own module."""

from __future__ import annotations

import typer

from constitutional_guard import __version__
from constitutional_guard.cli import bench_cmd, data_cmd, demo_cmd, models_cmd
from constitutional_guard.cli.common import console, exit_on_input_error

app = typer.Typer(
    name="cguard",
    help="Constitutional Guard: constitutional classifiers and guarded generation for open-weight LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(models_cmd.app, name="models")
app.add_typer(data_cmd.app, name="data")
app.add_typer(bench_cmd.app, name="bench")
app.command("demo")(demo_cmd.demo)


@app.command("version")
def version() -> None:
    """Print the package version."""
    console.print(__version__)


def main() -> None:
    with exit_on_input_error():
        app()
