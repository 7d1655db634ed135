"""Guarded streaming generation: the cascade at generation time, and the guard bundle.

The names below are imported on first use, so reading settings (``guard.policy``) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from constitutional_guard.guard.bundle import GuardBundle, build_bundle, read_bundle
    from constitutional_guard.guard.events import (
        ClassifierVerdict,
        Escalation,
        Finished,
        FinishReason,
        GenerationConfig,
        GenerationResult,
        GenerationStatus,
        GuardErrorCode,
        GuardEvent,
        TextReleased,
        TokenRisk,
    )
    from constitutional_guard.guard.guard import Guard, collect_result
    from constitutional_guard.guard.policy import PolicySettings
    from constitutional_guard.guard.upstream import UpstreamSettings

_HOMES = {
    "bundle": ("GuardBundle", "build_bundle", "read_bundle"),
    "events": (
        "ClassifierVerdict",
        "Escalation",
        "Finished",
        "FinishReason",
        "GenerationConfig",
        "GenerationResult",
        "GenerationStatus",
        "GuardErrorCode",
        "GuardEvent",
        "TextReleased",
        "TokenRisk",
    ),
    "guard": ("Guard", "collect_result"),
    "policy": ("PolicySettings",),
    "upstream": ("UpstreamSettings",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "ClassifierVerdict",
    "Escalation",
    "FinishReason",
    "Finished",
    "GenerationConfig",
    "GenerationResult",
    "GenerationStatus",
    "Guard",
    "GuardBundle",
    "GuardErrorCode",
    "GuardEvent",
    "PolicySettings",
    "TextReleased",
    "TokenRisk",
    "UpstreamSettings",
    "build_bundle",
    "collect_result",
    "read_bundle",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
