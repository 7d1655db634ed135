"""Second-stage classifiers: the exchange classifier and the constitutional LM classifier."""

from constitutional_guard.classifiers.base import (
    ClassifierScore,
    SafetyClassifier,
    Thresholds,
    Verdict,
)
from constitutional_guard.classifiers.registry import (
    CLASSIFIER_KINDS,
    ClassifierKind,
    classifier_kind,
    load_classifier,
)

__all__ = [
    "CLASSIFIER_KINDS",
    "ClassifierKind",
    "ClassifierScore",
    "SafetyClassifier",
    "Thresholds",
    "Verdict",
    "classifier_kind",
    "load_classifier",
]
