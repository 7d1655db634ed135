"""Server settings: authentication and the limits that protect the guarded model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from constitutional_guard.errors import InputError

API_KEYS_ENV = "CGUARD_API_KEYS"


@dataclass(frozen=True)
class ServeSettings:
    """How the server authenticates clients and how much work it accepts."""

    api_keys: tuple[str, ...] = ()
    """Accepted bearer tokens; empty only together with ``auth=False``."""
    auth: bool = True
    """Require a bearer token on every endpoint except ``/healthz``."""
    model_name: str | None = None
    """Model name reported in responses; defaults to the guard's target model id."""
    max_body_bytes: int = 1_000_000
    max_messages: int = 128
    max_prompt_chars: int = 32_000
    """Total characters over all messages (or over one moderation input)."""
    max_prompt_tokens: int = 4096
    """Largest prompt in the target model's tokens (checked when the guard exposes its model as ``guard.lm``)."""
    max_tokens: int = 1024
    """Largest ``max_tokens`` a request may ask for."""
    default_max_tokens: int = 256
    """Completion tokens when a request does not say."""
    max_concurrent: int = 2
    """Generations and moderations running at once (each on its own worker thread)."""
    max_queued: int = 32
    """Requests waiting for a worker; beyond that the server answers 429."""
    request_timeout_s: float = 300.0
    """Wall-clock budget of one request, queueing included."""
    body_timeout_s: float = 30.0
    """Time a client has to send its whole request body (408 after that)."""
    drain_grace_s: float = 30.0
    """On shutdown, how long requests in flight may take to finish; streams still open then end with an error."""
    max_moderation_inputs: int = 32

    def __post_init__(self) -> None:
        if self.auth and not self.api_keys:
            raise ValueError(f"auth is on but no API key is set: set {API_KEYS_ENV}, pass a key file or disable auth")
        if any(not key or key != key.strip() for key in self.api_keys):
            raise ValueError("API keys must be non-empty and have no surrounding whitespace")
        positive = ("max_body_bytes", "max_messages", "max_prompt_chars", "max_prompt_tokens", "max_tokens",
                    "default_max_tokens", "max_concurrent", "max_moderation_inputs")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.max_queued < 0:
            raise ValueError(f"max_queued must be ≥ 0, got {self.max_queued}")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens ({self.max_tokens})")
        for name in ("request_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.drain_grace_s >= 0:
            raise ValueError(f"drain_grace_s must be ≥ 0, got {self.drain_grace_s}")


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
