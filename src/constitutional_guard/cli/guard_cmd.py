"""``cguard guard build`` (assemble a guard bundle) and ``cguard generate`` (guarded streaming in the terminal)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from constitutional_guard.cli.common import console, err_console
from constitutional_guard.cli.settings_options import build_settings, settings_options
from constitutional_guard.cli.upstream_options import UPSTREAM, UPSTREAM_API_KEY_ENV, UPSTREAM_MODEL, upstream_settings
from constitutional_guard.guard.policy import PolicySettings

app = typer.Typer(help="Guard bundles: a target model, constitution, probe and classifier(s).", no_args_is_help=True)

VERDICT_STYLES = {"allow": "green", "uncertain": "yellow", "block": "bold red"}


def _top_p(value: float) -> float:
    if not 0 < value <= 1:
        raise typer.BadParameter(f"must be in (0, 1], got {value}")
    return value


def _stops(values: list[str]) -> list[str]:
    if any(not value for value in values):
        raise typer.BadParameter("stop strings must not be empty")
    return values


@app.command("build")
@settings_options(PolicySettings, file_option="--policy")
def build(
    out: Path = typer.Option(..., "--out", "-o", help="Bundle directory to write (replaced if it exists)."),
    probe: Path = typer.Option(..., "--probe", help="Probe directory (cguard probe train)."),
    classifier: Path | None = typer.Option(None, "--classifier", help="Second-stage classifier directory."),
    input_classifier: Path | None = typer.Option(
        None, "--input-classifier", help="Prompt classifier; default: the second-stage classifier checks prompts."
    ),
    constitution: str | None = typer.Option(None, "--constitution", help="Constitution YAML (default: shipped)."),
    target_model: str | None = typer.Option(None, "--model", help="Target model (default: the probe's)."),
    refusal: str | None = typer.Option(None, help="Refusal text (default: the constitution's)."),
    settings_given: dict[str, Any] | None = None,
) -> None:
    """Assemble a self-contained guard bundle (guard.yaml + copies of the artifacts).

    Every policy setting is an option, a key of the --policy file or a --set key=value.
    """
    from constitutional_guard.guard.bundle import build_bundle

    policy = build_settings(PolicySettings, settings_given or {})
    build_bundle(out, probe, classifier, input_classifier, constitution, target_model, policy, refusal)
    console.print(f"wrote guard bundle {out}")


def generate(
    guard: Path = typer.Option(..., "--guard", help="Guard bundle directory."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="User message."),
    system: str | None = typer.Option(None, "--system", help="System message."),
    max_new_tokens: int = typer.Option(256, min=1, help="Maximum new tokens."),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy."),
    top_p: float = typer.Option(1.0, callback=_top_p, help="Nucleus sampling mass, in (0, 1]."),
    top_k: int = typer.Option(0, min=0, help="Top-k sampling (0 = off)."),
    seed: int | None = typer.Option(None, help="Sampling seed."),
    stop: list[str] = typer.Option([], "--stop", callback=_stops, help="Stop string, not empty (repeatable)."),
    trace: Path | None = typer.Option(None, "--trace", help="Write a PNG of the per-token risk."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full result (trace, verdicts, timings)."),
    device: str | None = typer.Option(None, help="cpu, cuda, … (default: best available)."),
    upstream: str | None = UPSTREAM,
    upstream_model: str | None = UPSTREAM_MODEL,
    upstream_api_key_env: str | None = UPSTREAM_API_KEY_ENV,
    show_verdicts: bool = typer.Option(
        False, "--show-verdicts", help="After the text, list escalations and classifier verdicts on stderr."
    ),
) -> None:
    """Guarded streaming generation: released text on stdout as it clears the checks; a summary on stderr."""
    from constitutional_guard.atomic import write_json_atomic
    from constitutional_guard.guard.bundle import read_bundle
    from constitutional_guard.guard.events import GenerationConfig
    from constitutional_guard.guard.guard import Guard
    from constitutional_guard.guard.trace_plot import plot_trace

    config = GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=tuple(stop)
    )
    remote = upstream_settings(guard, upstream, upstream_model, upstream_api_key_env)
    the_guard = Guard.from_pretrained(guard, device=device, upstream=remote)
    at = remote or read_bundle(guard).upstream
    if at is not None:
        err_console.print(f"guarding {the_guard.model_id} at {at.base_url}", highlight=False)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    result = stream_to_console(the_guard, messages, config, show_verdicts)
    if trace is not None:
        plot_trace(result, the_guard.thresholds, trace, title=prompt[:80])
        err_console.print(f"wrote {trace}")
    if json_out is not None:
        write_json_atomic(json_out, json.loads(json.dumps(asdict(result), default=str)))
        err_console.print(f"wrote {json_out}")


def stream_to_console(
    guard: Any, messages: list[dict[str, str]], config: Any, show_verdicts: bool = False
) -> Any:
    """Stream a guarded generation's released text to stdout and a summary to stderr; return its result.

    With ``show_verdicts``, escalations and classifier verdicts follow the text on stderr, one per line.
    """
    from constitutional_guard.guard.events import ClassifierVerdict, Escalation, Finished, TextReleased
    from constitutional_guard.guard.guard import collect_result

    events, timings = [], {}
    for event in guard.stream(messages, config, timings):
        events.append(event)
        if isinstance(event, TextReleased):
            style = "bold red" if event.is_refusal else None
            console.print(event.text, end="", style=style, markup=False, highlight=False, soft_wrap=True)
        elif isinstance(event, Finished):
            console.print()
    if show_verdicts:
        for event in events:
            if isinstance(event, Escalation):
                err_console.print(f"  escalate @{event.index} risk {event.smoothed:.2f}", style="yellow")
            elif isinstance(event, ClassifierVerdict):
                at = f" @{event.index}" if event.index >= 0 else ""
                err_console.print(
                    f"  {event.stage}{at} {event.verdict} {event.score:.2f}",
                    style=VERDICT_STYLES.get(event.verdict, ""),
                    highlight=False,
                )
    result = collect_result(events, timings)
    total = timings.get("total", 0.0)
    rate = result.completion_tokens / total if total else 0.0
    err_console.print(
        f"[bold]{result.status.value}[/] ({result.finish_reason.value}): {result.completion_tokens} tokens in "
        f"{total:.1f}s ({rate:.1f} tok/s), {len(result.escalations)} escalations, "
        f"{result.classifier_calls} classifier calls" + (f"; error: {result.error}" if result.error else "")
    )
    return result
