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
    """Why the output was held when a check raised (the guard fails closed)."""


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
    """Seconds: ``input_check``, ``generation``, ``probe``, ``classifier``, ``total``, ``first_release``."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None

    @property
    def classifier_calls(self) -> int:
        """Second-stage calls on the response (input checks not counted)."""
        return sum(1 for v in self.verdicts if v.stage != "input")
