"""Per-token probe risk over a generated response, as the streaming guard sees it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from constitutional_guard.models.generation import Greedy, generate_batch
from constitutional_guard.models.loading import LoadedModel
from constitutional_guard.probes.probe import LinearProbe, score_sequence
from constitutional_guard.probes.smoothing import smooth


@dataclass
class Trace:
    prompt: str
    tokens: list[str]
    raw: np.ndarray
    smoothed: np.ndarray
    threshold: float

    @property
    def escalates_at(self) -> int | None:
        """1-based index of the first generated token whose smoothed risk reaches the threshold."""
        hits = np.flatnonzero(self.smoothed >= self.threshold)
        return int(hits[0]) + 1 if len(hits) else None


@torch.inference_mode()
def trace_response(lm: LoadedModel, probe: LinearProbe, prompt: str, max_new_tokens: int = 64) -> Trace:
    """Generate greedily, then score every generated token with the probe and its smoother."""
    probe.check_compatible(lm.name, lm.hidden_size)
    prompt_ids = lm.encode_messages([{"role": "user", "content": prompt}])
    (output,) = generate_batch(
        lm.model, [prompt_ids], Greedy(max_new_tokens), lm.tokenizer.pad_token_id, lm.eos_token_ids
    )
    response = output.token_ids
    raw = score_sequence(probe, lm, prompt_ids + response)[len(prompt_ids) :].numpy().astype(np.float64)
    tokens = [lm.tokenizer.decode([int(t)]) for t in response]
    return Trace(prompt, tokens, raw, smooth(raw, probe.new_smoother()), probe.config.escalation_threshold)
