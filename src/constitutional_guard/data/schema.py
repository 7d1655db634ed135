"""One record type for every dataset: a prompt or chat, an optional (partial) response, a label."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

BINARY_LABELS: tuple[str, ...] = ("safe", "unsafe")
THREE_CLASS_LABELS: tuple[str, ...] = ("safe_compliance", "safe_refusal", "unsafe_compliance")
LABELS: dict[str, tuple[str, ...]] = {"binary": BINARY_LABELS, "three_class": THREE_CLASS_LABELS}
SPLITS: tuple[str, ...] = ("train", "validation", "calibration", "test")
CONSTITUTION_SOURCE = "constitution"
"""The source name of the constitution's own examples."""
SYNTHETIC_PREFIX = "synthetic/"
"""Sources of prompts an LM wrote from the constitution (``synthetic/MODEL``)."""

LabelScheme = Literal["binary", "three_class"]
Split = Literal["train", "validation", "calibration", "test"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str


def normalize_label(value: Any, scheme: str) -> str:
    """Map a label given as its name or integer id to the canonical name of ``scheme``."""
    names = LABELS[scheme]
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if 0 <= index < len(names):
            return names[index]
    elif isinstance(value, str) and value.strip().lower() in names:
        return value.strip().lower()
    allowed = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    raise ValueError(f"unknown {scheme} label {value!r}; expected one of {allowed}")


class Record(BaseModel):
    """A labelled prompt or exchange; ``response`` may be a prefix of a streamed answer."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    prompt: str | None = None
    messages: list[Message] | None = None
    response: str | None = None
    label_scheme: LabelScheme = "binary"
    label: str
    split: Split | None = None
    source: str = Field(default="unknown", min_length=1)
    category: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    _columns: tuple[str, ...] = PrivateAttr(default=())
    """Keys of ``meta`` that were top-level columns of the file the record was read from."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Record:
        """Validate a file row, keeping the columns this schema does not know in ``meta``.

        ``to_row`` writes them back as top-level columns. Raises ``ValueError`` naming a column that is also a
        ``meta`` key, and pydantic's ``ValidationError`` for bad fields.
        """
        data = {key: value for key, value in row.items() if key in cls.model_fields}
        columns = tuple(key for key in row if key not in cls.model_fields)
        meta = data.get("meta")
        if columns and isinstance(meta, dict | None):
            clash = [key for key in columns if key in (meta or {})]
            if clash:
                raise ValueError(f"{clash[0]}: column also given as a meta key")
            data["meta"] = {**(meta or {}), **{key: row[key] for key in columns}}
        record = cls.model_validate(data)
        record._columns = columns
        return record

    def to_row(self) -> dict[str, Any]:
        """The record as a JSON-ready row, with the columns ``from_row`` kept in ``meta`` back at the top level."""
        row = self.model_dump(mode="json")
        for key in self._columns:
            if key in row["meta"]:
                row[key] = row["meta"].pop(key)
        return row

    @field_validator("label", mode="before")
    @classmethod
    def _normalize_label(cls, value: Any, info: ValidationInfo) -> str:
        return normalize_label(value, info.data.get("label_scheme") or "binary")

    @model_validator(mode="after")
    def _needs_prompt(self) -> Record:
        if not (self.prompt and self.prompt.strip()) and not self.messages:
            raise ValueError("empty prompt: give a non-blank 'prompt' or a non-empty 'messages' list")
        return self

    @property
    def prompt_text(self) -> str:
        """The prompt, or the last user message of a chat."""
        if self.prompt and self.prompt.strip():
            return self.prompt
        users = [m.content for m in self.messages or [] if m.role == "user"]
        return users[-1] if users else self.messages[-1].content  # type: ignore[index]

    @property
    def chat(self) -> list[dict[str, str]]:
        """The conversation up to (not including) the response, as role/content dicts."""
        if self.messages:
            return [m.model_dump() for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]

    @property
    def binary_label(self) -> str:
        """``unsafe`` for unsafe (compliance), ``safe`` for everything else."""
        return "unsafe" if self.label in ("unsafe", "unsafe_compliance") else "safe"

    @property
    def is_unsafe(self) -> bool:
        return self.binary_label == "unsafe"

    @property
    def label_id(self) -> int:
        return LABELS[self.label_scheme].index(self.label)

def stable_id(*parts: str, length: int = 12) -> str:
    """A short content hash, stable across runs and machines."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:length]


FAMILY_KINDS = ("source", "package")


def family_folds(families: Iterable[str], folds: int) -> dict[str, int]:
    """Each family's fold: families dealt to ``folds`` folds in order of size (largest first), so the folds hold
    about as many records each."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    sizes = Counter(families)
    return {family: i % folds for i, family in enumerate(sorted(sizes, key=lambda f: (-sizes[f], f)))}


def family_of(record: Record, by: str = "source") -> str:
    """The record's source (or its package); prompts an LM wrote from the constitution belong to the constitution's
    family, so holding out the policy's examples also holds out their paraphrases."""
    if by not in FAMILY_KINDS:
        raise ValueError(f"by: expected one of {', '.join(FAMILY_KINDS)}, got {by!r}")
    source = CONSTITUTION_SOURCE if record.source.startswith(SYNTHETIC_PREFIX) else record.source
    return source if by == "source" else source.split("/", 1)[0]
