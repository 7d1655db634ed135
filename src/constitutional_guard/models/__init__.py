"""Model resolution and loading: embedded aliases, local folders and hub ids."""

from constitutional_guard.models.embedded import EMBEDDED_MODELS, EmbeddedModel, materialize
from constitutional_guard.models.loading import LoadedModel, load_causal_lm, resolve_model

__all__ = ["EMBEDDED_MODELS", "EmbeddedModel", "LoadedModel", "load_causal_lm", "materialize", "resolve_model"]
