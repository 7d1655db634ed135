"""Guarded streaming generation: the cascade at generation time, and the guard bundle."""

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
