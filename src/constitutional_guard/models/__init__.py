"""Model resolution and loading: embedded aliases, local folders and hub ids.

The loading helpers import torch, so they are imported on first use: listing embedded models stays light.
"""

from typing import Any

from constitutional_guard.models.embedded import EMBEDDED_MODELS, EmbeddedModel, materialize

_LOADING = ("LoadedModel", "load_causal_lm", "resolve_model")


def __getattr__(name: str) -> Any:
    if name in _LOADING:
        from constitutional_guard.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EMBEDDED_MODELS", "EmbeddedModel", "LoadedModel", "load_causal_lm", "materialize", "resolve_model"]
