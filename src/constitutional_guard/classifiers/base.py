"""The interface every second-stage classifier offers, so the guard and the evaluation can use any."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import ConfigDict, Field, field_validator

from constitutional_guard.classifiers.registry import CONFIG_NAME as CONFIG_NAME
from constitutional_guard.classifiers.registry import load_classifier as load_classifier
from constitutional_guard.config_io import SettingsModel
from constitutional_guard.data.schema import LABELS


class Verdict(StrEnum):
    ALLOW = "allow"
    UNCERTAIN = "uncertain"
    BLOCK = "block"


@dataclass(frozen=True)
class Thresholds:
    """score < allow → allow; score ≥ block → block; in between → uncertain (hold)."""

    allow: float = 0.5
    block: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.allow <= self.block <= 1.0 + 1e-9:
            raise ValueError(f"thresholds need 0 ≤ allow ≤ block ≤ 1, got allow={self.allow}, block={self.block}")

    def verdict(self, score: float) -> Verdict:
        if score >= self.block:
            return Verdict.BLOCK
        if score < self.allow:
            return Verdict.ALLOW
        return Verdict.UNCERTAIN


def optional_thresholds(allow: float | None, block: float | None, names: str) -> Thresholds | None:
    """Thresholds from an optional config pair (both or neither set); ``names`` prefixes the errors."""
    if allow is None and block is None:
        return None
    if allow is None or block is None:
        raise ValueError(f"{names}: give both or neither")
    try:
        return Thresholds(allow, block)
    except ValueError as exc:
        raise ValueError(f"{names}: {exc}") from None


@dataclass(frozen=True)
class ClassifierScore:
    """One scored prompt or exchange."""

    score: float
    """Probability of unsafe."""
    verdict: Verdict
    thresholds: Thresholds
    """The pair the verdict came from: the prompt thresholds for a prompt alone, else the exchange ones."""
    label: str
    """Most probable label name."""
    probabilities: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    categories: dict[str, float] = field(default_factory=dict)
    """Probability per harmful category of the constitution, for classifiers that name categories (else empty)."""


@dataclass
class LabelledConfig:
    """The part of ``classifier_config.json`` every scored-by-probabilities kind shares: its kind, the label
    scheme and labels, and the exchange and prompt threshold pairs. A subclass sets ``kind``'s default to its
    own kind, which is then the only kind it accepts."""

    kind: str = ""
    label_scheme: str = "binary"
    labels: list[str] = field(default_factory=lambda: list(LABELS["binary"]))
    """Label names in the order of the model's outputs."""
    unsafe_labels: list[str] = field(default_factory=lambda: ["unsafe"])
    """Labels whose probabilities add up to the unsafe score."""
    allow: float = 0.5
    block: float = 0.5
    prompt_allow: float | None = None
    prompt_block: float | None = None
    """Thresholds for prompts alone (the input check); None: ``allow`` / ``block`` serve prompts too."""

    def __post_init__(self) -> None:
        expected = type(self).__dataclass_fields__["kind"].default
        if self.kind != expected:
            raise ValueError(f"kind: expected {expected!r}, got {self.kind!r}")
        if self.label_scheme not in LABELS:
            raise ValueError(f"label_scheme: unknown {self.label_scheme!r}; known: {', '.join(LABELS)}")
        if list(self.labels) != list(LABELS[self.label_scheme]):
            raise ValueError(f"labels: {self.labels} do not match scheme {self.label_scheme!r}")
        if not self.unsafe_labels or set(self.unsafe_labels) - set(self.labels):
            raise ValueError(f"unsafe_labels: {self.unsafe_labels} must be a non-empty subset of {self.labels}")
        Thresholds(self.allow, self.block)
        optional_thresholds(self.prompt_allow, self.prompt_block, "prompt_allow / prompt_block")


class ConfigThresholds:
    """``thresholds`` and ``prompt_thresholds`` kept in ``self.config`` as ``allow`` / ``block`` and
    ``prompt_allow`` / ``prompt_block`` (None: prompts use the exchange pair), so saving the config saves them."""

    config: Any

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.config.allow, self.config.block)

    @thresholds.setter
    def thresholds(self, value: Thresholds) -> None:
        self.config.allow, self.config.block = value.allow, value.block

    @property
    def prompt_thresholds(self) -> Thresholds:
        c = self.config
        return optional_thresholds(c.prompt_allow, c.prompt_block, "prompt thresholds") or self.thresholds

    @prompt_thresholds.setter
    def prompt_thresholds(self, value: Thresholds | None) -> None:
        pair = (value.allow, value.block) if value is not None else (None, None)
        self.config.prompt_allow, self.config.prompt_block = pair

    def scores_from_probabilities(
        self, items: list[tuple[str, str | None]], rows: list[list[float]], unsafe_ids: list[int]
    ) -> list[ClassifierScore]:
        """One score per item from its per-label probabilities: P(unsafe) is the sum over ``unsafe_ids``,
        judged by the prompt pair for a prompt alone and the exchange pair otherwise. A non-finite score is
        ``uncertain`` (held): a check that cannot be read never allows."""
        exchange, prompt = self.thresholds, self.prompt_thresholds
        labels = self.config.labels
        results = []
        for (_, response), row in zip(items, rows, strict=True):
            thresholds = prompt if response is None else exchange
            unsafe = sum(row[i] for i in unsafe_ids)
            finite = math.isfinite(unsafe)
            unsafe = min(max(unsafe, 0.0), 1.0) if finite else float("nan")
            results.append(
                ClassifierScore(
                    score=unsafe,
                    verdict=thresholds.verdict(unsafe) if finite else Verdict.UNCERTAIN,
                    thresholds=thresholds,
                    label=labels[max(range(len(row)), key=row.__getitem__)],
                    probabilities=dict(zip(labels, row, strict=True)),
                )
            )
        return results


@runtime_checkable
class SafetyClassifier(Protocol):
    kind: str
    thresholds: Thresholds
    """For exchanges (prompt + response or response prefix), and for prompts without their own pair."""

    @property
    def prompt_thresholds(self) -> Thresholds:
        """For prompts alone (``response is None``, the input check); ``thresholds`` unless set apart."""
        ...

    @prompt_thresholds.setter
    def prompt_thresholds(self, value: Thresholds | None) -> None:
        """None: prompts use ``thresholds``."""
        ...

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore: ...

    def score_batch(self, items: list[tuple[str, str | None]]) -> list[ClassifierScore]: ...

    def save_pretrained(self, path: str | Path) -> None: ...

    def save_config(self, path: str | Path) -> None:
        """Rewrite only ``classifier_config.json`` in ``path`` (e.g. after calibration)."""
        ...


class TrainOptions(SettingsModel):
    """Options shared by every classifier kind's ``train(options) -> Path`` function.

    ``cguard classifier train`` builds its options from these fields and also reads them from ``--config FILE``
    and ``--set key=value``; keys that are not fields there go to ``extra``.
    """

    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field(description="Corpus directory as written by `cguard data build` (<scheme>/<split>.jsonl).")
    out_dir: str = Field(description="Output classifier directory (checkpoints go inside).")
    base_model: str = Field(
        description="Hub id, local folder or embedded alias (e.g. minilm-l6); on the CLI, default: the kind's own."
    )
    label_scheme: str = Field(default="binary", description="binary | three_class")
    constitution: str | None = Field(default=None, description="Constitution YAML (default: the shipped one).")
    epochs: float = Field(default=3.0, description="Training epochs (fractions allowed).")
    batch_size: int = Field(default=16, description="Training batch size.")
    learning_rate: float = Field(default=5e-5, description="Peak learning rate.")
    max_length: int = Field(default=512, description="Token window; long prompts are shortened, responses kept.")
    max_train: int | None = Field(default=None, description="Cap on training records (deterministic sample).")
    seed: int = Field(default=0, description="Seed for sampling, shuffling and initialisation.")
    resume: bool = Field(default=True, description="Resume from the last checkpoint in the output if there is one.")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Kind-specific settings (e.g. LoRA rank); `--set key=value` on the CLI."
    )

    @field_validator("label_scheme")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value not in LABELS:
            raise ValueError(f"must be one of {', '.join(LABELS)}")
        return value
