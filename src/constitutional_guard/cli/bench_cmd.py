"""``cguard bench``: speed benchmarks that compare side by side in one run."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Benchmarks: each compares variants side by side in one run and writes JSON.", no_args_is_help=True
)
