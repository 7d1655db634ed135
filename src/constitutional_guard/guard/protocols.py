"""What the guard needs from a probe: the contract ``constitutional_guard.probes.LinearProbe`` fulfils."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch


class Smoother(Protocol):
    """Turns a stream of per-token probe scores into a smoothed risk."""

    def update(self, score: float) -> float: ...

    def reset(self) -> None: ...


class ProbeSettings(Protocol):
    model_id: str
    hidden_size: int
    escalation_threshold: float


@runtime_checkable
class TokenProbe(Protocol):
    """Reads P(unsafe) per position from the hidden states of one forward pass."""

    layers: list[int]
    """Indices into the HF ``output_hidden_states`` tuple (0 = embeddings)."""
    config: ProbeSettings

    def score_hidden_states(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Full hidden-states tuple (each ``[batch, seq, hidden]``) → P(unsafe) ``[batch, seq]``, float32 on CPU."""
        ...

    def new_smoother(self) -> Smoother: ...

    def check_compatible(self, model_id: str, hidden_size: int) -> None:
        """Raise if the probe was not trained on this model."""
        ...
