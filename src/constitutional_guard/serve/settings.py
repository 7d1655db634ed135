"""Server settings: authentication and the limits that protect the guarded model."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ConfigDict, Field, model_validator

from constitutional_guard.config_io import SettingsModel
from constitutional_guard.errors import InputError

API_KEYS_ENV = "CGUARD_API_KEYS"


class ServeSettings(SettingsModel):
    """How the server authenticates clients and how much work it accepts.

    ``cguard serve`` builds its options from these fields (``--max-messages`` …) and also reads them from
    ``--config FILE`` and ``--set key=value``; errors name the field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: tuple[str, ...] = Field(default=(), description="Accepted bearer tokens; empty only with auth off.")
    auth: bool = Field(default=True, description="Require a bearer token on every endpoint except /healthz.")
    model_name: str | None = Field(
        default=None, description="Model name reported in responses; default: the guard's target model id."
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1, description="Largest request body in bytes.")
    max_messages: int = Field(default=128, ge=1, description="Most messages in one chat request.")
    max_prompt_chars: int = Field(
        default=32_000, ge=1, description="Largest prompt in characters, over all messages (or one moderation input)."
    )
    max_prompt_tokens: int = Field(
        default=4096, ge=1, description="Largest prompt in the target model's tokens (when the guard has it loaded)."
    )
    max_tokens: int = Field(default=1024, ge=1, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int = Field(default=256, ge=1, description="Completion tokens when a request does not say.")
    max_concurrent: int = Field(
        default=2, ge=1, description="Generations and moderations running at once (each on its own worker thread)."
    )
    max_queued: int = Field(default=32, ge=0, description="Requests waiting for a worker; more get 429.")
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="Wall-clock budget of one request in seconds, queueing included (504)."
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds a client has to send its whole request body (408)."
    )
    drain_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="On shutdown, seconds requests in flight get to finish; streams still open then end with an error.",
    )
    max_moderation_inputs: int = Field(default=32, ge=1, description="Most inputs in one moderation request.")

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if self.auth and not self.api_keys:
            raise ValueError(f"auth is on but no API key is set: set {API_KEYS_ENV}, pass a key file or disable auth")
        if any(not key or key != key.strip() for key in self.api_keys):
            raise ValueError("API keys must be non-empty and have no surrounding whitespace")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens ({self.max_tokens})")
        return self


def load_api_keys(key_file: str | Path | None = None, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """Keys from ``$CGUARD_API_KEYS`` (comma-separated) and from a file (one per line, ``#`` comments)."""
    env = os.environ if environ is None else environ
    keys = [k.strip() for k in env.get(API_KEYS_ENV, "").split(",") if k.strip()]
    if key_file is not None:
        path = Path(key_file)
        if not path.is_file():
            raise InputError.one(path, "API key file not found")
        for line in path.read_text(encoding="utf-8").splitlines():
            key = line.split("#", 1)[0].strip()
            if key:
                keys.append(key)
    return tuple(dict.fromkeys(keys))
