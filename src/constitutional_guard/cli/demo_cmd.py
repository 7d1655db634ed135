"""``cguard demo``: the whole pipeline on the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.rule import Rule

from constitutional_guard.cli.common import console, err_console, progress_bar

RULE_WIDTH = 100


def demo(
    bundle_dir: Path | None = typer.Option(
        None, "--bundle-dir", help="Where the demo guard bundle lives (default: in the cache)."
    ),
    print_bundle_dir: bool = typer.Option(
        False, "--print-bundle-dir", help="Print the demo bundle directory and exit."
    ),
    max_new_tokens: int = typer.Option(64, min=1, help="Tokens to generate per prompt."),
    train_classifiers: bool = typer.Option(
        False,
        "--train-classifiers",
        help="Train both classifiers from the corpus instead of using the ones that ship (about 30 min on 2 cores).",
    ),
    export_classifiers: Path | None = typer.Option(
        None,
        "--export-classifiers",
        help="Train both classifiers and write their heads, configs and calibration scores under DIR, as they ship "
        "(constitutional_guard/demo_assets).",
        metavar="DIR",
    ),
) -> None:
    """Build the demo guard (corpus, probe, classifier; cached) and run guarded generation on sample prompts."""
    from constitutional_guard.cli.guard_cmd import stream_to_console
    from constitutional_guard.demo import DEMO_PROMPTS, DemoSettings, default_bundle_dir, ensure_demo_bundle
    from constitutional_guard.guard.events import GenerationConfig
    from constitutional_guard.guard.guard import Guard
    from constitutional_guard.models.embedded import materialize

    bundle = bundle_dir or default_bundle_dir()
    if print_bundle_dir:
        console.print(str(bundle), highlight=False)
        return
    settings = DemoSettings()
    aliases = [settings.target_model, settings.classifier_base, settings.input_classifier_base]
    aliases = [alias for alias in dict.fromkeys(aliases) if alias]
    with progress_bar() as bar:
        task = bar.add_task("preparing embedded models", total=len(aliases))
        for alias in aliases:
            bar.update(task, description=f"preparing {alias}")
            materialize(alias)
            bar.advance(task)
    ensure_demo_bundle(
        bundle,
        settings,
        log=lambda message: err_console.print(f"[dim]{message}[/]", highlight=False),
        train_classifiers=train_classifiers,
        export_classifiers=export_classifiers,
    )
    guard = Guard.from_pretrained(bundle)
    config = GenerationConfig(max_new_tokens=max_new_tokens)
    outcomes = []
    for kind, prompt in DEMO_PROMPTS:
        console.print(Rule(kind), width=min(console.width, RULE_WIDTH))
        console.print(f"[bold cyan]user[/]: {prompt}", highlight=False)
        console.print("[bold green]assistant[/]: ", end="")
        result = stream_to_console(guard, [{"role": "user", "content": prompt}], config, show_verdicts=True)
        outcomes.append((kind, prompt, result))
    console.print(Rule("verdicts"), width=min(console.width, RULE_WIDTH))
    for kind, prompt, result in outcomes:
        console.print(f"{result.status.value:>9}  [dim]{kind}[/]  {prompt}", highlight=False)
    console.print(f"\nguard bundle: {bundle}  (serve it with `cguard serve --guard {bundle} --no-auth`)")
