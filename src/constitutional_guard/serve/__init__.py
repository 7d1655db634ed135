"""The guarded OpenAI-compatible HTTP server: chat completions, moderations, health and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from constitutional_guard.serve.settings import ServeSettings

if TYPE_CHECKING:
    from constitutional_guard.serve.app import create_app

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    """Import the FastAPI app only when it is used, so reading settings stays light."""
    if name == "create_app":
        from constitutional_guard.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
