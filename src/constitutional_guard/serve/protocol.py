"""Pydantic models of the HTTP API: OpenAI-compatible chat completions and moderations, plus guard metadata."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorBody


# --- chat completions ---------------------------------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's request that a guarded text generation can honour; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only one choice per request is supported.")
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def plain_messages(self) -> list[dict[str, str]]:
        """Messages as ``{"role", "content"}`` dicts; ``developer`` is read as ``system``."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class VerdictInfo(BaseModel):
    stage: str
    index: int
    score: float
    verdict: str
    label: str
    categories: dict[str, float] = Field(default_factory=dict)


class GuardInfo(BaseModel):
    """Guard metadata attached to completions as the extra field ``guard``; OpenAI clients ignore it."""

    status: Literal["completed", "blocked", "held"]
    verdict: str
    """The last classifier verdict, or ``allow`` when no classifier was consulted."""
    score: float | None = None
    """The last classifier score, if any."""
    category: str | None = None
    """The highest-scoring category of the last verdict, if the classifier reports categories."""
    max_risk: float = 0.0
    """The highest smoothed probe risk over the generated tokens."""
    escalations: int = 0
    verdicts: list[VerdictInfo] = Field(default_factory=list)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    guard: GuardInfo


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    guard: GuardInfo | None = None


# --- moderations --------------------------------------------------------------------------------------------------


class Exchange(BaseModel):
    """A prompt and, optionally, a response to judge together."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    response: str | None = None


class ModerationRequest(BaseModel):
    """``input``: a text, an exchange, or a list of either (one result each, in order)."""

    model_config = ConfigDict(extra="ignore")

    input: str | Exchange | list[str | Exchange]
    model: str | None = None

    def items(self) -> list[Exchange]:
        values = self.input if isinstance(self.input, list) else [self.input]
        return [Exchange(prompt=v) if isinstance(v, str) else v for v in values]


class ModerationResult(BaseModel):
    flagged: bool
    """True unless the verdict is ``allow``: held content is flagged too."""
    categories: dict[str, bool]
    category_scores: dict[str, float]
    verdict: str
    score: float
    label: str


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    running: int
    queued: int


def error_payload(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code)).model_dump()
