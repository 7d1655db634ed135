"""Streaming smoothers: turn per-token probe scores into a risk that a single spiky token cannot push up.

Every smoother has ``update(score) -> smoothed risk`` and ``reset()``; escalation happens when the smoothed
risk reaches the escalation threshold.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

KINDS = ("ema", "window", "cummax", "k_consecutive", "none")


class Smoother(Protocol):
    def update(self, score: float) -> float: ...

    def reset(self) -> None: ...


class Identity:
    """No smoothing: the raw score."""

    def update(self, score: float) -> float:
        return float(score)

    def reset(self) -> None:
        pass


class EMA:
    """Exponential moving average starting from 0: ``risk ← α·score + (1 − α)·risk``."""

    def __init__(self, alpha: float):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"ema alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.value = 0.0

    def update(self, score: float) -> float:
        self.value = self.alpha * float(score) + (1.0 - self.alpha) * self.value
        return self.value

    def reset(self) -> None:
        self.value = 0.0


class WindowMean:
    """Mean of the last ``window`` scores, missing early positions counted as 0."""

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"window must be ≥ 1, got {window}")
        self.window = int(window)
        self.scores: deque[float] = deque(maxlen=self.window)

    def update(self, score: float) -> float:
        self.scores.append(float(score))
        return sum(self.scores) / self.window

    def reset(self) -> None:
        self.scores.clear()


class CumulativeMax:
    """Highest score so far (a monotone risk)."""

    def __init__(self) -> None:
        self.value = 0.0

    def update(self, score: float) -> float:
        self.value = max(self.value, float(score))
        return self.value

    def reset(self) -> None:
        self.value = 0.0


class KConsecutive:
    """Minimum of the last ``k`` scores (0 until ``k`` scores are seen): the risk passes a threshold only
    when ``k`` consecutive tokens all pass it."""

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        self.k = int(k)
        self.scores: deque[float] = deque(maxlen=self.k)

    def update(self, score: float) -> float:
        self.scores.append(float(score))
        return min(self.scores) if len(self.scores) == self.k else 0.0

    def reset(self) -> None:
        self.scores.clear()


def make_smoother(kind: str, params: dict[str, Any] | None = None) -> Smoother:
    """Build a smoother by name: ``ema`` (alpha), ``window`` (window), ``cummax``, ``k_consecutive`` (k), ``none``."""
    params = params or {}
    if kind == "ema":
        return EMA(float(params.get("alpha", 0.3)))
    if kind == "window":
        return WindowMean(int(params.get("window", 8)))
    if kind == "cummax":
        return CumulativeMax()
    if kind == "k_consecutive":
        return KConsecutive(int(params.get("k", 3)))
    if kind == "none":
        return Identity()
    raise ValueError(f"unknown smoother {kind!r}; use one of {', '.join(KINDS)}")


def smooth(scores: Iterable[float], smoother: Smoother) -> np.ndarray:
    """Smoothed risk after each score of one sequence (the smoother is reset first)."""
    smoother.reset()
    return np.array([smoother.update(s) for s in scores], dtype=np.float64)


def single_spike_escalates(smoother: Smoother, threshold: float, length: int = 32, baseline: float = 0.0) -> bool:
    """Whether one token scoring 1.0 among ``baseline`` scores reaches ``threshold`` at any position."""
    for position in range(length):
        scores = np.full(length, baseline)
        scores[position] = 1.0
        if smooth(scores, smoother).max() >= threshold:
            return True
    return False


def default_candidates() -> list[tuple[str, dict[str, Any]]]:
    """The smoothers and parameters compared on the validation split."""
    return (
        [("none", {}), ("cummax", {})]
        + [("ema", {"alpha": a}) for a in (0.1, 0.2, 0.3, 0.5)]
        + [("window", {"window": w}) for w in (3, 5, 8, 16)]
        + [("k_consecutive", {"k": k}) for k in (2, 3, 5, 8)]
    )


def describe(kind: str, params: dict[str, Any]) -> str:
    inner = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{kind}({inner})" if inner else kind


def max_risk(sequences: Sequence[np.ndarray], smoother: Smoother) -> np.ndarray:
    """Highest smoothed risk reached over each sequence (0 for an empty one)."""
    return np.array([smooth(s, smoother).max() if len(s) else 0.0 for s in sequences], dtype=np.float64)
