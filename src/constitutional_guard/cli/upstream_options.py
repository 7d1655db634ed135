"""The ``--upstream`` options shared by ``cguard serve``, ``cguard generate`` and ``cguard bench upstream``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from constitutional_guard.guard.upstream import UpstreamSettings

UPSTREAM = typer.Option(
    None, "--upstream", help="Guard this OpenAI-compatible engine (base URL, e.g. http://127.0.0.1:8001/v1) instead "
    "of the target model, which then monitors its stream; default: the bundle's upstream: section, if any."
)
UPSTREAM_MODEL = typer.Option(
    None, "--upstream-model", help="Model name sent upstream (default: the bundle's, else the first it lists)."
)
UPSTREAM_API_KEY_ENV = typer.Option(
    None, "--upstream-api-key-env", help="Environment variable holding the upstream's API key."
)

OVERLAP_INPUT_CHECK = typer.Option(
    None, "--overlap-input-check/--no-overlap-input-check", help="Send the request upstream while the input check "
    "runs (earlier first token; a prompt the check blocks then reaches the engine, its answer dropped unread); "
    "default: the bundle's setting, else off."
)


def upstream_settings(
    guard: Path, upstream: str | None, model: str | None, api_key_env: str | None, required: bool = False,
    **overrides: Any,
) -> UpstreamSettings | None:
    """The bundle's ``upstream:`` section with the given options (and any other non-None ``UpstreamSettings``
    fields in ``overrides``) over it; None when no option is given (the bundle's own section then applies as it
    is) unless ``required``. Bad values raise ``typer.BadParameter``."""
    from pydantic import ValidationError

    from constitutional_guard.guard.bundle import read_bundle
    from constitutional_guard.guard.upstream import UpstreamSettings

    given = [upstream, model, api_key_env, *overrides.values()]
    if all(value is None for value in given) and not required:
        return None
    in_bundle = read_bundle(guard).upstream
    try:
        remote = UpstreamSettings.merged(in_bundle, base_url=upstream, model=model, api_key_env=api_key_env,
                                         **overrides)
        remote.api_key()
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "needed: the bundle's guard.yaml has no upstream: section"
        raise typer.BadParameter(message, param_hint="--upstream") from None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--upstream-api-key-env") from None
    return remote
