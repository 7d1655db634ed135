"""The exchange classifier: a fine-tuned encoder scoring a prompt or a prompt + (partial) response."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from constitutional_guard.classifiers.base import (
    CONFIG_NAME,
    ClassifierScore,
    ConfigThresholds,
    LabelledConfig,
)
from constitutional_guard.classifiers.input_format import MIN_PROMPT_TOKENS, format_input
from constitutional_guard.config_io import load_config, save_config
from constitutional_guard.data.schema import LABELS
from constitutional_guard.errors import InputError
from constitutional_guard.models.loading import default_device

UNSAFE_LABELS = ("unsafe", "unsafe_compliance")


@dataclass
class ExchangeConfig(LabelledConfig):
    """What ``classifier_config.json`` of an exchange classifier holds."""

    kind: str = "exchange"
    max_length: int = 512
    input_format: str = "pair"
    """``pair``: ``[CLS] prompt [SEP] response [SEP]``, or ``[CLS] prompt [SEP]`` for a prompt alone."""
    min_prompt_tokens: int = MIN_PROMPT_TOKENS
    base_model: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    """How it was trained (data, sizes, held-out sources, best validation metrics)."""
    calibration: dict[str, Any] = field(default_factory=dict)
    """Where the thresholds came from (targets, data, metrics), written by calibration."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.input_format != "pair":
            raise ValueError(f"input_format: unknown {self.input_format!r}; known: pair")
        if self.max_length < 16:
            raise ValueError(f"max_length: {self.max_length} is too small (need ≥ 16)")

    @classmethod
    def for_scheme(cls, label_scheme: str, **kwargs: Any) -> ExchangeConfig:
        labels = list(LABELS[label_scheme])
        return cls(label_scheme=label_scheme, labels=labels, unsafe_labels=[labels[-1]], **kwargs)


class ExchangeClassifier(ConfigThresholds):
    """Scores prompts and exchanges with an ``AutoModelForSequenceClassification``."""

    kind = "exchange"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: ExchangeConfig,
        device: str | torch.device | None = None,
        batch_size: int = 16,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.batch_size = batch_size
        self._unsafe_ids = [config.labels.index(name) for name in config.unsafe_labels]

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device | None = None, batch_size: int = 16
    ) -> ExchangeClassifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(path)
        config = load_config(ExchangeConfig, folder / CONFIG_NAME)
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
        if model.config.num_labels != len(config.labels):
            raise InputError.one(
                folder / CONFIG_NAME,
                f"model has {model.config.num_labels} outputs but the config names {len(config.labels)} labels",
                field="labels",
            )
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return cls(model, tokenizer, config, device=device or default_device(), batch_size=batch_size)

    def save_pretrained(self, path: str | Path) -> None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self.save_config(folder)

    def save_config(self, path: str | Path) -> None:
        save_config(self.config, Path(path) / CONFIG_NAME)

    def encode(self, prompt: str, response: str | None = None) -> dict[str, list[int]]:
        """Model input of one prompt or exchange (see ``input_format``)."""
        formatted = format_input(
            self.tokenizer, prompt, response, self.config.max_length, self.config.min_prompt_tokens
        )
        return formatted.encoding

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore:
        return self.score_batch([(prompt, response)])[0]

    @torch.inference_mode()
    def probabilities(self, items: list[tuple[str, str | None]]) -> torch.Tensor:
        """Per-label probabilities, one row per item, batched by similar length."""
        encodings = [self.encode(prompt, response) for prompt, response in items]
        order = sorted(range(len(items)), key=lambda i: len(encodings[i]["input_ids"]))
        out = torch.empty(len(items), len(self.config.labels))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer.pad([encodings[i] for i in chunk], return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            logits = self.model(**batch).logits.float()
            out[chunk] = torch.softmax(logits, dim=-1).cpu()
        return out

    def score_batch(self, items: list[tuple[str, str | None]]) -> list[ClassifierScore]:
        if not items:
            return []
        return self.scores_from_probabilities(items, self.probabilities(items).tolist(), self._unsafe_ids)
