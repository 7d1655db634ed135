"""The per-token decision of the cascade: probe risk → continue / suspicious / escalate, and what may be released.

A generated token reaches the user only once a check covers it: either its smoothed probe risk and that of
the ``release_lag`` tokens after it stayed low, or a second-stage ``allow`` covered it. Text that was still
unreleased when the probe escalated waits for an ``allow``. Suspicious risk pauses release; when the paused
backlog grows to ``max_held_tokens`` the second stage is asked, so a long borderline stretch is not stuck.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import ConfigDict, Field

from constitutional_guard.classifiers.base import Verdict
from constitutional_guard.config_io import SettingsModel


class RiskState(StrEnum):
    CONTINUE = "continue"
    SUSPICIOUS = "suspicious"
    ESCALATE = "escalate"


class PolicySettings(SettingsModel):
    """How the cascade acts on probe risk; stored under ``policy:`` in ``guard.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    escalation_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Smoothed risk that escalates; None uses the probe's calibrated one."
    )
    suspicious_fraction: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Risk ≥ this fraction of the escalation threshold is suspicious: release pauses until it falls.",
    )
    release_lag: int = Field(
        default=4, ge=0, description="Tokens whose low risk must follow a token before it is released."
    )
    cooldown_tokens: int = Field(
        default=16, ge=0, description="Tokens after an allow or uncertain verdict before the classifier is asked again."
    )
    max_held_tokens: int = Field(
        default=32,
        ge=1,
        description="While risk stays suspicious, ask the second stage once this many tokens wait unreleased.",
    )
    input_check: bool = Field(default=True, description="Classify the prompt before generating.")
    final_check: bool = Field(default=True, description="Classify the complete response before its last tokens go out.")

    def thresholds(self, probe_threshold: float) -> RiskThresholds:
        escalate = self.escalation_threshold if self.escalation_threshold is not None else probe_threshold
        return RiskThresholds(escalate=escalate, suspicious=escalate * self.suspicious_fraction)


@dataclass(frozen=True)
class RiskThresholds:
    """Smoothed-risk levels of the two non-continue states."""

    escalate: float
    suspicious: float


def risk_state(smoothed: float, thresholds: RiskThresholds) -> RiskState:
    if smoothed >= thresholds.escalate:
        return RiskState.ESCALATE
    if smoothed >= thresholds.suspicious:
        return RiskState.SUSPICIOUS
    return RiskState.CONTINUE


@dataclass
class StreamState:
    """Per-stream bookkeeping of the cascade (token counts are exclusive bounds)."""

    scored: int = 0
    """Tokens the probe has read."""
    released: int = 0
    """Tokens already sent to the user."""
    approved: int = 0
    """Tokens covered by a second-stage allow."""
    low_run: int = 0
    """Consecutive most recent tokens with low (continue) risk."""
    pinned_from: int | None = None
    """First token that was unreleased at an unresolved escalation; only an allow releases it."""
    cooldown_until: int = 0
    """The classifier is not asked again before this many tokens are scored."""


def observe(state: StreamState, risk: RiskState) -> None:
    """Record the probe's reading of the next token."""
    state.scored += 1
    state.low_run = state.low_run + 1 if risk is RiskState.CONTINUE else 0
    if risk is RiskState.ESCALATE and state.pinned_from is None:
        state.pinned_from = state.released


def needs_classifier(state: StreamState, risk: RiskState, settings: PolicySettings) -> bool:
    """Outside the cooldown of the previous verdict, and escalated or suspicious with a long unreleased backlog."""
    if state.scored < state.cooldown_until:
        return False
    if risk is RiskState.ESCALATE:
        return True
    return risk is RiskState.SUSPICIOUS and state.scored - state.released >= settings.max_held_tokens


def apply_verdict(state: StreamState, verdict: Verdict, settings: PolicySettings) -> None:
    """An allow covers every token scored so far; uncertain holds the unreleased text; both start a cooldown."""
    if verdict is Verdict.ALLOW:
        state.approved = state.scored
        state.pinned_from = None
    elif state.pinned_from is None:
        state.pinned_from = state.released
    state.cooldown_until = state.scored + settings.cooldown_tokens


def release_bound(state: StreamState, settings: PolicySettings) -> int:
    """How many tokens (from the start) may have been released now."""
    bound = max(state.released, state.approved)
    if state.low_run > settings.release_lag:
        lagged = state.scored - settings.release_lag
        if state.pinned_from is not None:
            lagged = min(lagged, state.pinned_from)
        bound = max(bound, lagged)
    return bound
