"""Second-stage classifiers: the exchange classifier and the constitutional LM classifier."""

from constitutional_guard.classifiers.base import (
    ClassifierScore,
    SafetyClassifier,
    Thresholds,
    Verdict,
    load_classifier,
)

__all__ = ["ClassifierScore", "SafetyClassifier", "Thresholds", "Verdict", "load_classifier"]
