"""Probe training examples as the probe sees them in production; the class-balanced logistic fit with early
stopping is ``fit_logistic`` in ``probes/probe.py``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from constitutional_guard.activations import ActivationSet
from constitutional_guard.data.schema import Record
from constitutional_guard.probes.probe import LinearProbe


@dataclass
class Examples:
    """Probe inputs with their labels (1 = unsafe) and sample weights."""

    features: np.ndarray
    """[N, layers, hidden] float32."""
    labels: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def record_labels(records: Sequence[Record]) -> np.ndarray:
    return np.array([int(r.is_unsafe) for r in records], dtype=np.int64)


def token_weights(n_tokens: int, unsafe: bool, ramp_tokens: int) -> np.ndarray:
    """Per-token weights of one response, summing to 1: unsafe responses ramp up over the first tokens
    (an opening such as "Sure," says little yet), safe ones weigh every token equally."""
    weights = np.ones(n_tokens)
    if unsafe and ramp_tokens > 1:
        weights = np.minimum(1.0, (np.arange(n_tokens) + 1) / ramp_tokens)
    return weights / weights.sum()


def build_examples(
    acts: ActivationSet,
    records: Sequence[Record],
    layers: Sequence[int],
    position: str = "response_tokens",
    ramp_tokens: int = 8,
) -> Examples:
    """Examples at the final token (every record), at every response token (exchanges), or both.

    Every exchange's response tokens weigh 1 in total, like one final-token example, so long responses
    do not outweigh short ones.
    """
    if len(records) != len(acts.final):
        raise ValueError(f"{len(records)} records but {len(acts.final)} captured")
    labels = record_labels(records)
    feats, ys, ws = [], [], []
    if position in ("final", "both"):
        feats.append(acts.final_features(layers))
        ys.append(labels)
        ws.append(np.ones(len(labels)))
    if position in ("response_tokens", "both"):
        lengths = acts.response_lengths()
        feats.append(acts.token_features(layers))
        ys.append(np.repeat(labels, lengths))
        ws.append(np.concatenate([token_weights(n, bool(y), ramp_tokens) for n, y in zip(lengths, labels, strict=True)]
                                 + [np.zeros(0)]))
    if not feats:
        raise ValueError(f"position must be final, response_tokens or both, got {position!r}")
    return Examples(np.concatenate(feats), np.concatenate(ys), np.concatenate(ws).astype(np.float64))


def token_scores(probe: LinearProbe, acts: ActivationSet) -> list[np.ndarray]:
    """P(unsafe) at every response token, one array per record (empty for prompt-only records)."""
    scores = probe.predict_proba(acts.token_features(probe.layers)) if len(acts.tokens) else np.zeros(0)
    return [scores[a:b] for a, b in zip(acts.offsets[:-1], acts.offsets[1:], strict=True)]
