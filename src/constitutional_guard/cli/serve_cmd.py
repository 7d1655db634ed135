"""``cguard serve``: the guarded OpenAI-compatible HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer

from constitutional_guard.cli.common import err_console
from constitutional_guard.cli.settings_options import build_settings, settings_options
from constitutional_guard.cli.upstream_options import (
    OVERLAP_INPUT_CHECK,
    UPSTREAM,
    UPSTREAM_API_KEY_ENV,
    UPSTREAM_MODEL,
    upstream_settings,
)
from constitutional_guard.serve.settings import API_KEYS_ENV, ServeSettings, load_api_keys


@settings_options(
    ServeSettings,
    exclude=("api_keys", "auth"),
    aliases={
        "request_timeout_s": ("--timeout",),
        "body_timeout_s": ("--body-timeout",),
        "drain_grace_s": ("--drain-grace",),
    },
)
def serve(
    guard: Path = typer.Option(..., "--guard", exists=True, file_okay=False, help="Guard bundle directory."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to bind."),
    api_key_file: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help=f"File of API keys, one per line (adds to ${API_KEYS_ENV})."
    ),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without authentication (trusted networks only)."),
    device: str | None = typer.Option(None, help="Torch device for the target model (default: CUDA if available)."),
    upstream: str | None = UPSTREAM,
    upstream_model: str | None = UPSTREAM_MODEL,
    upstream_api_key_env: str | None = UPSTREAM_API_KEY_ENV,
    overlap_input_check: bool | None = OVERLAP_INPUT_CHECK,
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = typer.Option(
        "info", case_sensitive=False, help="uvicorn log level."
    ),
    settings_given: dict[str, Any] | None = None,
) -> None:
    """Serve a guard bundle: /v1/chat/completions (streaming too), /v1/moderations, /healthz, /metrics.

    Every server setting is an option, a key of the --config file or a --set key=value.
    """
    from constitutional_guard.guard.guard import Guard
    from constitutional_guard.serve.app import create_app
    from constitutional_guard.serve.drain import serve_app

    keys = () if no_auth else load_api_keys(api_key_file)
    given = dict(settings_given or {})
    if isinstance(given.get("max_tokens"), int) and "default_max_tokens" not in given:
        # a lower cap lowers the default with it
        given["default_max_tokens"] = min(ServeSettings.model_fields["default_max_tokens"].default, given["max_tokens"])
    settings = build_settings(ServeSettings, {**given, "api_keys": keys, "auth": not no_auth})
    remote = upstream_settings(guard, upstream, upstream_model, upstream_api_key_env,
                               overlap_input_check=overlap_input_check)
    if no_auth and host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[bold yellow]warning:[/] --no-auth on {host}: anyone who can reach this port can use it")
    err_console.print(f"loading guard bundle {guard} …")
    app = create_app(Guard.from_pretrained(guard, device=device, upstream=remote), settings)
    auth = "off (--no-auth)" if no_auth else f"{len(keys)} API key(s)"
    err_console.print(
        f"serving on http://{host}:{port}/v1 — auth {auth}, {settings.max_concurrent} worker(s), "
        f"queue {settings.max_queued}"
    )
    serve_app(app, host=host, port=port, log_level=log_level)
