"""Where the toolkit keeps its cache (materialised models, activations, demo bundle)."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

CACHE_ENV = "CGUARD_CACHE_DIR"


def cache_dir() -> Path:
    """The cache root: ``$CGUARD_CACHE_DIR`` if set, else the user cache dir."""
    root = os.environ.get(CACHE_ENV) or user_cache_dir("constitutional-guard", appauthor=False)
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Directory that holds materialised (dense safetensors) copies of embedded models."""
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
