"""A real ``Guard`` on a real target model with stand-in checks, for load-testing the server without a bundle.

The token loop, release policy, events and refusal are the real ones; only the probe (a fixed low risk read
from the real last hidden layer) and the classifier (keyword match) are stand-ins, so throughput and latency
measure serving and generation, not detection quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from constitutional_guard.classifiers.base import ClassifierScore, Thresholds
from constitutional_guard.guard.guard import Guard
from constitutional_guard.models.loading import load_causal_lm

HARMFUL_KEYWORDS = {"nerve agent": "weapons_cbrn", "pipe bomb": "conventional_weapons", "ransomware": "cyber_attacks"}


@dataclass(frozen=True)
class _ProbeSettings:
    model_id: str
    hidden_size: int
    escalation_threshold: float = 0.5


class _Mean:
    """Mean of the last three scores."""

    def __init__(self) -> None:
        self.scores: list[float] = []

    def update(self, score: float) -> float:
        self.scores = [*self.scores[-2:], score]
        return sum(self.scores) / len(self.scores)

    def reset(self) -> None:
        self.scores = []


class FixedRiskProbe:
    """Reads the last hidden layer of every token and reports a fixed risk below the escalation threshold."""

    def __init__(self, model_id: str, num_layers: int, hidden_size: int, risk: float = 0.05) -> None:
        self.layers = [num_layers]
        self.config = _ProbeSettings(model_id, hidden_size)
        self.risk = risk

    def score_hidden_states(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        last = hidden_states[self.layers[0]]
        return torch.full(last.shape[:2], self.risk, dtype=torch.float32)

    def new_smoother(self) -> _Mean:
        return _Mean()

    def check_compatible(self, model_id: str, hidden_size: int) -> None:
        if hidden_size != self.config.hidden_size:
            raise ValueError(f"hidden size {hidden_size} != {self.config.hidden_size}")


class KeywordClassifier:
    """Blocks exchanges that name a keyword of ``HARMFUL_KEYWORDS``; reports that keyword's category."""

    kind = "keyword"
    thresholds = Thresholds(allow=0.5, block=0.5)

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore:
        text = f"{prompt}\n{response or ''}".lower()
        hits = {category: 0.98 for keyword, category in HARMFUL_KEYWORDS.items() if keyword in text}
        score = 0.98 if hits else 0.02
        label = "unsafe" if hits else "safe"
        return ClassifierScore(score, self.thresholds.verdict(score), self.thresholds, label,
                               detail={"categories": hits})

    def score_batch(self, items: list[tuple[str, str | None]]) -> list[ClassifierScore]:
        return [self.score(p, r) for p, r in items]


def scripted_guard(model: str = "smollm2-135m-instruct") -> Guard:
    """The real Guard on ``model`` with the stand-in probe and classifier."""
    lm = load_causal_lm(model)
    return Guard(lm, FixedRiskProbe(model, lm.num_layers, lm.hidden_size), classifier=KeywordClassifier())
