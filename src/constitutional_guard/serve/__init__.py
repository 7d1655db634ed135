"""The guarded OpenAI-compatible HTTP server: chat completions, moderations, health and metrics."""

from constitutional_guard.serve.app import create_app
from constitutional_guard.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
