"""Shared CLI helpers: console, progress bars and turning input errors into clean exits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from constitutional_guard.errors import InputError

console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def exit_on_input_error() -> Iterator[None]:
    """Print an InputError's problems and exit 2 instead of showing a traceback."""
    try:
        yield
    except InputError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise SystemExit(2) from None


def progress_bar(transient: bool = False) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
    )
