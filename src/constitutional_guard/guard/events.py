"""Typed events and results of guarded generation, shared by the library, the CLI and the server."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class GenerationStatus(StrEnum):
    COMPLETED = "completed"
    BLOCKED = "blocked"
    HELD = "held"


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    HELD = "held"


class GuardErrorCode(StrEnum):
    """Why a guard failed closed (held the output because a check could not be completed)."""

    GENERATION_FAILED = "generation_failed"
    PROBE_FAILED = "probe_failed"
    CLASSIFIER_FAILED = "classifier_failed"
    NON_FINITE_SCORE = "non_finite_score"
    UPSTREAM_ERROR = "upstream_error"
    """The remote engine failed, answered with an error or broke off its stream."""
    UPSTREAM_TIMEOUT = "upstream_timeout"
    """The remote engine did not answer in time."""


class SourceError(Exception):
    """A token source could not go on; the guard holds what it has not released and reports ``code``."""

    def __init__(self, code: GuardErrorCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling and stopping settings of one guarded generation."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    """Keep generating past end-of-sequence tokens (benchmarks that need equal token counts)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be ≥ 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0, got {self.top_k}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


@dataclass(frozen=True)
class TextReleased:
    """Text that passed every check and may be shown to the user."""

    text: str
    first_token: int
    last_token: int
    """Indices of the generated tokens this text covers (both -1 for the refusal)."""
    is_refusal: bool = False
    """The constitution's refusal, sent after a block (not model output)."""


@dataclass(frozen=True)
class TokenRisk:
    """The probe's reading of one generated token."""

    index: int
    token: str
    score: float
    smoothed: float
    state: str
    """continue / suspicious / escalate."""


@dataclass(frozen=True)
class Escalation:
    """The smoothed probe risk crossed the escalation threshold: the second stage is consulted."""

    index: int
    smoothed: float


@dataclass(frozen=True)
class ClassifierVerdict:
    """A classifier decision: on the prompt (``input``), a response prefix (``stream``) or the whole (``final``)."""

    stage: str
    index: int
    score: float
    verdict: str
    label: str
    latency_ms: float
    categories: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished:
    """The last event of every stream."""

    status: GenerationStatus
    finish_reason: FinishReason
    response: str
    """Exactly the text the user received: every ``TextReleased`` joined (a block appends the refusal)."""
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None
    """Why the output was held when a check failed (the guard fails closed)."""
    error_code: GuardErrorCode | None = None
    """A stable code for ``error``."""


GuardEvent = TextReleased | TokenRisk | Escalation | ClassifierVerdict | Finished


@dataclass
class GenerationResult:
    """Everything about one guarded generation."""

    status: GenerationStatus
    finish_reason: FinishReason
    response: str
    trace: list[TokenRisk] = field(default_factory=list)
    verdicts: list[ClassifierVerdict] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: ``input_check``, ``generation`` (or waiting for the upstream), ``probe`` (``monitor`` for a remote
    source: its forwards and the probe), ``classifier``, ``total``, ``first_release``."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    error_code: GuardErrorCode | None = None

    @property
    def classifier_calls(self) -> int:
        """Second-stage calls on the response (input checks not counted)."""
        return sum(1 for v in self.verdicts if v.stage != "input")
