"""Names imported on demand: a registry names its parts as ``"module:attribute"`` and resolves them when used,
so that listing a registry (and ``cguard --help``) imports nothing heavy."""

from __future__ import annotations

import importlib
from typing import Any


def resolve(spec: str) -> Any:
    """The attribute ``spec`` (``"package.module:attribute"``) names, importing its module first."""
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)
