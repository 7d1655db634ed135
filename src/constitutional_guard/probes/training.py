"""Probe training: examples as the probe sees them in production, class-balanced logistic fit, early stopping."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

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


def _balanced(labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sample weights rescaled so that both classes carry the same total weight."""
    out = weights.clone()
    for cls in (0, 1):
        mask = labels == cls
        total = weights[mask].sum()
        if total > 0:
            out[mask] = weights[mask] / total * (weights.sum() / 2)
    return out / out.mean()


def _loss(
    probe: LinearProbe, z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Weighted BCE: on the single logit (concat) or summed over each layer's own probe (mean)."""
    logits = probe.logits_from_standardised(z, weight, bias)
    targets = y[:, None].expand_as(logits)
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
    return (per * w).sum() / w.sum()


def fit_logistic(
    probe: LinearProbe,
    features: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
    val_features: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
    l2: float = 1e-2,
    lr: float = 1e-3,
    max_epochs: int = 80,
    batch_size: int = 2048,
    patience: int = 5,
    seed: int = 0,
) -> dict:
    """Fit standardisation on the training features, then class-balanced L2 logistic weights with Adam,
    keeping the epoch with the lowest balanced validation loss (no validation: all epochs)."""
    n_layers, hidden = len(probe.config.layers), probe.config.hidden_size
    x = torch.as_tensor(features, dtype=torch.float32).reshape(len(features), n_layers, hidden)
    y = torch.as_tensor(labels, dtype=torch.float32)
    if len(torch.unique(y)) < 2:
        raise ValueError("training needs both safe and unsafe examples")
    w = torch.as_tensor(sample_weight if sample_weight is not None else np.ones(len(y)), dtype=torch.float32)
    probe.set_standardisation(x, w)
    z = probe.standardise(x)
    w = _balanced(y, w)
    val = None
    if val_features is not None and val_labels is not None and len(np.unique(val_labels)) == 2:
        vx = torch.as_tensor(val_features, dtype=torch.float32).reshape(len(val_features), n_layers, hidden)
        vw = torch.as_tensor(val_weight if val_weight is not None else np.ones(len(val_labels)), dtype=torch.float32)
        vy = torch.as_tensor(val_labels, dtype=torch.float32)
        val = (probe.standardise(vx), vy, _balanced(vy, vw))
    generator = torch.Generator().manual_seed(seed)
    weight = torch.zeros(n_layers, hidden, requires_grad=True)
    bias = torch.zeros(len(probe.bias), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    best = (float("inf"), weight.detach().clone(), bias.detach().clone(), 0)
    history = []
    for epoch in range(max_epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            loss = _loss(probe, z[idx], y[idx], w[idx], weight, bias) + l2 * (weight**2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if val is None:
            best = (0.0, weight.detach().clone(), bias.detach().clone(), epoch)
            continue
        with torch.no_grad():
            val_loss = float(_loss(probe, *val, weight, bias))
        history.append(val_loss)
        if val_loss < best[0] - 1e-5:
            best = (val_loss, weight.detach().clone(), bias.detach().clone(), epoch)
        elif epoch - best[3] >= patience:
            break
    probe.set_weights(best[1], best[2])
    info = {"best_epoch": best[3] + 1, "epochs_run": epoch + 1, "val_loss": best[0] if val is not None else None,
            "l2": l2, "lr": lr, "batch_size": batch_size, "patience": patience}
    probe.config.training = {**copy.deepcopy(probe.config.training), **info}
    return info
