"""``cguard serve``: the guarded OpenAI-compatible HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from constitutional_guard.cli.common import err_console
from constitutional_guard.serve.settings import API_KEYS_ENV, ServeSettings, load_api_keys


def serve(
    guard: Path = typer.Option(..., "--guard", exists=True, file_okay=False, help="Guard bundle directory."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to bind."),
    api_key_file: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help=f"File of API keys, one per line (adds to ${API_KEYS_ENV})."
    ),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without authentication (trusted networks only)."),
    model_name: str | None = typer.Option(None, help="Model name in responses; default: the bundle's target model."),
    max_concurrent: int = typer.Option(2, min=1, help="Generations running at once."),
    max_queued: int = typer.Option(32, min=0, help="Requests waiting beyond those; more get 429."),
    max_tokens: int = typer.Option(1024, min=1, help="Largest max_tokens a request may ask for."),
    default_max_tokens: int = typer.Option(256, min=1, help="Completion tokens when a request does not say."),
    max_body_bytes: int = typer.Option(1_000_000, min=1, help="Largest request body."),
    max_prompt_chars: int = typer.Option(32_000, min=1, help="Largest prompt (all messages) in characters."),
    max_prompt_tokens: int = typer.Option(4096, min=1, help="Largest prompt in the target model's tokens."),
    timeout: float = typer.Option(300.0, min=0.001, help="Per-request time limit in seconds, queueing included."),
    body_timeout: float = typer.Option(30.0, min=0.001, help="Seconds a client has to send its request body (408)."),
    drain_grace: float = typer.Option(
        30.0, min=0.0, help="On SIGTERM, seconds requests in flight get to finish while new ones get 503."
    ),
    device: str | None = typer.Option(None, help="Torch device for the target model (default: CUDA if available)."),
    upstream: str | None = typer.Option(
        None, help="Guard this OpenAI-compatible engine (base URL, e.g. http://127.0.0.1:8001/v1) instead of the "
        "target model, which then monitors its stream."
    ),
    upstream_model: str | None = typer.Option(None, help="Model name sent upstream (default: the first it lists)."),
    upstream_api_key_env: str | None = typer.Option(
        None, help="Environment variable holding the upstream's API key."
    ),
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = typer.Option(
        "info", case_sensitive=False, help="uvicorn log level."
    ),
) -> None:
    """Serve a guard bundle: /v1/chat/completions (streaming too), /v1/moderations, /healthz, /metrics."""
    from pydantic import ValidationError

    from constitutional_guard.guard.bundle import read_bundle
    from constitutional_guard.guard.guard import Guard
    from constitutional_guard.guard.upstream import UpstreamSettings
    from constitutional_guard.serve.app import create_app
    from constitutional_guard.serve.drain import serve_app

    keys = () if no_auth else load_api_keys(api_key_file)
    try:
        settings = ServeSettings(
            api_keys=keys,
            auth=not no_auth,
            model_name=model_name,
            max_body_bytes=max_body_bytes,
            max_prompt_chars=max_prompt_chars,
            max_prompt_tokens=max_prompt_tokens,
            max_tokens=max_tokens,
            default_max_tokens=min(default_max_tokens, max_tokens),
            max_concurrent=max_concurrent,
            max_queued=max_queued,
            request_timeout_s=timeout,
            body_timeout_s=body_timeout,
            drain_grace_s=drain_grace,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    remote = None
    if upstream is not None or upstream_model is not None or upstream_api_key_env is not None:
        in_bundle = read_bundle(guard).upstream
        try:
            remote = UpstreamSettings.merged(in_bundle, base_url=upstream, model=upstream_model,
                                             api_key_env=upstream_api_key_env)
            remote.api_key()
        except ValidationError as exc:
            error = exc.errors()[0]
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "missing":
                message = "needed: the bundle's guard.yaml has no upstream: section"
            raise typer.BadParameter(message, param_hint="--upstream") from None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--upstream-api-key-env") from None
    if no_auth and host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[bold yellow]warning:[/] --no-auth on {host}: anyone who can reach this port can use it")
    err_console.print(f"loading guard bundle {guard} …")
    app = create_app(Guard.from_pretrained(guard, device=device, upstream=remote), settings)
    auth = "off (--no-auth)" if no_auth else f"{len(keys)} API key(s)"
    err_console.print(f"serving on http://{host}:{port}/v1 — auth {auth}, {max_concurrent} worker(s), "
                      f"queue {max_queued}")
    serve_app(app, host=host, port=port, log_level=log_level)
