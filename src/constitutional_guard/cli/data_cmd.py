"""``cguard data``: validate record files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from constitutional_guard.cli.common import console
from constitutional_guard.data.io import read_records, summarize

app = typer.Typer(help="Safety data: validate, build and inspect record files.", no_args_is_help=True)


@app.command("validate")
def validate(files: list[Path] = typer.Argument(..., help="JSONL, CSV or Parquet record files.")) -> None:
    """Check record files; print counts per label, split, source and category, or every problem."""
    for file in files:
        records = read_records(file)
        console.print(f"[bold]{file}[/]: {len(records)} records, all valid")
        for field, counts in summarize(records).items():
            table = Table(field, "count", title=None, show_edge=False)
            for key, count in counts.items():
                table.add_row(key, str(count))
            console.print(table)
