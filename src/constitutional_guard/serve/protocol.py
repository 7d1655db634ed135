"""Pydantic models of the HTTP API: OpenAI-compatible chat completions and moderations, plus guard metadata."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

INT64_BOUND = 2**63
"""Seeds are 64-bit signed integers: -INT64_BOUND ≤ seed < INT64_BOUND."""


def _encodable(value: str) -> str:
    """Reject text that is not valid Unicode (lone surrogates such as ``\\ud800`` cannot be encoded)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"invalid Unicode at character {exc.start}: a lone surrogate") from None
    return value


Text = Annotated[str, AfterValidator(_encodable)]
"""A request string that can be encoded as UTF-8."""


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
    text: Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: Text | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


UNSUPPORTED_UNLESS: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "parallel_tool_calls": (None, False),
    "functions": (None, []),
    "function_call": (None, "none"),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "response_format": (None, {"type": "text"}),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
}
"""OpenAI parameters a guarded text generation cannot honour, with the values that ask for nothing of them."""


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's request that a guarded text generation can honour.

    Parameters in ``UNSUPPORTED_UNLESS`` are rejected (400 naming them) unless they ask for nothing;
    fields OpenAI's API does not define are ignored.
    """

    model_config = ConfigDict(extra="ignore")

    model: Text | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=-INT64_BOUND, lt=INT64_BOUND, description="A 64-bit signed integer.")
    stop: Text | list[Text] | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only one choice per request is supported.")
    user: Text | None = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    functions: Any = None
    function_call: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    response_format: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not stop for stop in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator(*UNSUPPORTED_UNLESS)
    @classmethod
    def _unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        if not any(value == neutral and type(value) is type(neutral) for neutral in UNSUPPORTED_UNLESS[name]):
            raise ValueError(f"{name} is not supported by this server (only text generation under guard)")
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


class GuardErrorInfo(BaseModel):
    """Why the guard failed closed: a stable ``code`` and a message."""

    code: str
    message: str


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
    error: GuardErrorInfo | None = None
    """Set when a check failed and the answer was held for that reason (the guard fails closed)."""


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

    prompt: Text
    response: Text | None = None


class ModerationRequest(BaseModel):
    """``input``: a text, an exchange, or a list of either (one result each, in order)."""

    model_config = ConfigDict(extra="ignore")

    input: Text | Exchange | list[Text | Exchange]
    model: Text | None = None

    def items(self) -> list[Exchange]:
        values = self.input if isinstance(self.input, list) else [self.input]
        return [Exchange(prompt=v) if isinstance(v, str) else v for v in values]


class ModerationResult(BaseModel):
    flagged: bool
    """True unless the verdict is ``allow``: held content is flagged too."""
    categories: dict[str, bool]
    category_scores: dict[str, float]
    verdict: str
    score: float | None
    """None when the classifier gave no usable score (see ``error``)."""
    label: str
    error: GuardErrorInfo | None = None
    """Set when the check failed; the input is then flagged as ``uncertain`` (fails closed)."""


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


class Health(BaseModel):
    status: Literal["ok", "draining"] = "ok"
    """``draining`` (with HTTP 503) once the server is shutting down."""
    model: str
    running: int
    queued: int


REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    ChatCompletionRequest, ChatMessage, TextPart, StreamOptions, ModerationRequest, Exchange,
)
REQUEST_FIELDS = frozenset(name for model in REQUEST_MODELS for name in model.model_fields)


def request_param(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """A validation error's location as request fields and list indices, without pydantic's union-member tags."""
    return tuple(part for part in loc if isinstance(part, int) or part in REQUEST_FIELDS)


def error_payload(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code)).model_dump()
