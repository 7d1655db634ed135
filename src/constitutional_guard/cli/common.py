"""Shared CLI helpers: consoles, progress bars, library output and turning input errors into clean exits."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from constitutional_guard.errors import InputError

PIPE_WIDTH = 10_000
"""Width of stdout when it is not a terminal: tables keep their natural width and lines are not wrapped."""

console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)


def configure_library_output(verbose: bool) -> None:
    """Show the progress bars and info logs of transformers, huggingface_hub and datasets only when ``verbose``.

    Set through environment variables, so it applies to libraries imported later (commands import them lazily).
    """
    bars_off = "0" if verbose else "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = bars_off
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = bars_off
    os.environ["TQDM_DISABLE"] = bars_off  # plain tqdm bars inside libraries (e.g. GGUF conversion)
    if verbose:
        os.environ["TRANSFORMERS_VERBOSITY"] = "info"
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        (transformers_logging.enable_progress_bar if verbose else transformers_logging.disable_progress_bar)()


def print_json(data: Any) -> None:
    """Write ``data`` to stdout as indented JSON (the ``--json`` form of listing commands)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


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
