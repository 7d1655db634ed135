"""The classifier kinds: one entry per kind, the one place that maps a kind's name to its parts.

Each entry names its config class, classifier class (whose ``from_pretrained`` loads a saved directory) and
``train(options: TrainOptions) -> Path`` function as ``"module:attribute"`` strings, imported on demand, so
that listing kinds (and ``cguard --help``) imports no torch. ``load_classifier`` reads the ``kind`` in a
directory's ``classifier_config.json`` and asks the registry for the class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constitutional_guard.errors import InputError
from constitutional_guard.lazy import resolve

CONFIG_NAME = "classifier_config.json"


@dataclass(frozen=True)
class ClassifierKind:
    """A kind of second-stage classifier and what it can do."""

    name: str
    description: str
    config: str
    """``module:Class`` of its ``classifier_config.json`` dataclass."""
    classifier: str
    """``module:Class`` implementing ``SafetyClassifier`` with a ``from_pretrained(path, **kwargs)`` classmethod."""
    trainer: str
    """``module:function``, ``train(options: TrainOptions) -> Path``."""
    default_base_model: str
    """Base model trained from when ``--base-model`` is not given (hub id or embedded alias)."""
    label_schemes: tuple[str, ...] = ("binary", "three_class")
    """Label schemes its outputs follow; a kind trained on another scheme's data answers in its first one."""
    scores_prompts: bool = True
    """Scores a prompt alone (the input check)."""
    scores_exchanges: bool = True
    """Scores a prompt with a (partial) response (the output check)."""
    reads_constitution: bool = False
    """Reads the constitution when scoring, so a policy edit takes effect without retraining (policy shift)."""

    def config_class(self) -> type:
        return resolve(self.config)

    def classifier_class(self) -> type:
        return resolve(self.classifier)

    def train_function(self) -> Any:
        return resolve(self.trainer)

    def load(self, path: str | Path, **kwargs: Any) -> Any:
        """The classifier saved in ``path`` (a ``SafetyClassifier``)."""
        return self.classifier_class().from_pretrained(path, **kwargs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "default_base_model": self.default_base_model,
            "label_schemes": list(self.label_schemes),
            "scores_prompts": self.scores_prompts,
            "scores_exchanges": self.scores_exchanges,
            "reads_constitution": self.reads_constitution,
        }


_MODULE = "constitutional_guard.classifiers"
CLASSIFIER_KINDS: dict[str, ClassifierKind] = {
    kind.name: kind
    for kind in (
        ClassifierKind(
            name="exchange",
            description="fine-tuned encoder (sequence classification) over prompt [SEP] response",
            config=f"{_MODULE}.exchange:ExchangeConfig",
            classifier=f"{_MODULE}.exchange:ExchangeClassifier",
            trainer=f"{_MODULE}.exchange_training:train",
            default_base_model="answerdotai/ModernBERT-base",
        ),
        ClassifierKind(
            name="constitutional",
            description="causal LM (optionally LoRA-tuned) prompted with the constitution, P(unsafe) as next token",
            config=f"{_MODULE}.constitutional:ConstitutionalConfig",
            classifier=f"{_MODULE}.constitutional:ConstitutionalClassifier",
            trainer=f"{_MODULE}.constitutional_training:train",
            default_base_model="Qwen/Qwen3-1.7B",
            label_schemes=("binary",),
            reads_constitution=True,
        ),
        ClassifierKind(
            name="embedding",
            description="frozen sentence encoder with a logistic or MLP head",
            config=f"{_MODULE}.embedding:EmbeddingConfig",
            classifier=f"{_MODULE}.embedding:EmbeddingClassifier",
            trainer=f"{_MODULE}.embedding_training:train",
            default_base_model="minilm-l6",
        ),
    )
}


def classifier_kind(name: str) -> ClassifierKind:
    """The registered kind called ``name``; a ``ValueError`` listing the known kinds otherwise."""
    try:
        return CLASSIFIER_KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown kind {name!r}; known: {', '.join(CLASSIFIER_KINDS)}") from None


def load_classifier(path: str | Path, **kwargs: Any) -> Any:
    """Load any saved classifier (a ``SafetyClassifier``); the ``kind`` in its ``classifier_config.json``
    picks the class."""
    config = Path(path) / CONFIG_NAME
    if not config.exists():
        raise InputError.one(config, f"not a classifier directory (no {CONFIG_NAME})")
    kind = json.loads(config.read_text(encoding="utf-8")).get("kind")
    if not isinstance(kind, str) or kind not in CLASSIFIER_KINDS:
        msg = f"unknown classifier kind {kind!r}; known: {', '.join(CLASSIFIER_KINDS)}"
        raise InputError.one(config, msg, field="kind")
    return CLASSIFIER_KINDS[kind].load(path, **kwargs)
