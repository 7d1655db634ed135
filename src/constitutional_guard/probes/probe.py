"""Logistic linear probe on one or several layers of a target model's hidden states.

``combine="concat"`` reads the standardised layers as one concatenated vector (one logit);
``combine="mean"`` fits one logistic probe per layer and averages their probabilities.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from constitutional_guard.atomic import atomic_dir
from constitutional_guard.config_io import load_config, save_config
from constitutional_guard.errors import InputError
from constitutional_guard.probes.smoothing import KINDS, Smoother, make_smoother

CONFIG_NAME = "probe_config.json"
WEIGHTS_NAME = "probe.safetensors"
COMBINES = ("concat", "mean")
POSITIONS = ("response_tokens", "final", "both")


class ProbeCompatibilityError(ValueError):
    """A probe is used with a model other than the one it was trained on."""


@dataclass
class ProbeConfig:
    """Everything needed to apply a probe, saved as ``probe_config.json`` beside the weights."""

    model_id: str
    """Target model the probe reads (alias, local path or hub id)."""
    hidden_size: int
    layers: list[int]
    """Hugging Face hidden-state indices (0 = embeddings, l = output of block l)."""
    combine: str = "concat"
    """``concat`` (one logit over all layers) or ``mean`` (average of per-layer probabilities)."""
    token_position: str = "response_tokens"
    """What it was trained on: ``response_tokens`` (every response prefix), ``final`` or ``both``."""
    feature_mean: list[list[float]] = field(default_factory=list)
    """Standardisation mean per layer ([layers][hidden])."""
    feature_std: list[list[float]] = field(default_factory=list)
    smoother: str = "k_consecutive"
    """Streaming smoother: ema, window, cummax, k_consecutive or none."""
    smoother_params: dict[str, float] = field(default_factory=lambda: {"k": 3})
    escalation_threshold: float = 0.5
    """Escalate (pause for the next stage) when the smoothed risk is ≥ this."""
    target_escalation_rate: float | None = None
    """False-escalation rate on safe calibration exchanges the threshold was chosen for."""
    calibration: dict[str, Any] = field(default_factory=dict)
    """How the threshold and smoother were chosen, and the recall they bought."""
    training: dict[str, Any] = field(default_factory=dict)
    """Training settings and the split sizes used."""
    template_hash: str | None = None

    def __post_init__(self) -> None:
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be ≥ 1, got {self.hidden_size}")
        if not self.layers:
            raise ValueError("layers must name at least one hidden-state index")
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {self.combine!r}")
        if self.token_position not in POSITIONS:
            raise ValueError(f"token_position must be one of {POSITIONS}, got {self.token_position!r}")
        if self.smoother not in KINDS:
            raise ValueError(f"smoother must be one of {KINDS}, got {self.smoother!r}")
        if not 0.0 <= self.escalation_threshold <= 1.0:
            raise ValueError(f"escalation_threshold must be in [0, 1], got {self.escalation_threshold}")
        for name in ("feature_mean", "feature_std"):
            value = getattr(self, name)
            if value and (len(value) != len(self.layers) or any(len(v) != self.hidden_size for v in value)):
                raise ValueError(f"{name} must be [{len(self.layers)} layers][{self.hidden_size}]")


def _as_3d(features: np.ndarray | torch.Tensor, n_layers: int, hidden: int) -> torch.Tensor:
    """Accept [N, layers, hidden], [N, layers·hidden] or (one layer) [N, hidden]; return float32 [N, L, H]."""
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    x = x.to(torch.float32)
    if x.ndim == 2 and x.shape[1] == n_layers * hidden:
        x = x.reshape(len(x), n_layers, hidden)
    if x.ndim != 3 or x.shape[1:] != (n_layers, hidden):
        raise ValueError(f"features of shape {tuple(x.shape)} do not match {n_layers} layers × hidden {hidden}")
    return x


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """``weight`` and ``bias`` from a probe's safetensors file: readable, floating point and finite."""
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated or garbage files
        raise InputError.one(path, f"not a readable safetensors file ({exc})") from exc
    missing = [name for name in ("weight", "bias") if name not in tensors]
    if missing:
        raise InputError.one(path, f"missing tensor(s) {', '.join(missing)}; found {sorted(tensors) or 'none'}")
    for name in ("weight", "bias"):
        tensor = tensors[name]
        if not tensor.is_floating_point():
            raise InputError.one(path, f"tensor {name} has dtype {tensor.dtype}; expected a floating-point dtype")
        if not bool(torch.isfinite(tensor).all()):
            raise InputError.one(path, f"tensor {name} holds NaN or infinite values")
    return tensors


def check_statistics(config: ProbeConfig, path: Path) -> None:
    """The standardisation statistics in ``probe_config.json`` are finite, and every std is positive."""
    for name in ("feature_mean", "feature_std"):
        values = np.asarray(getattr(config, name), dtype=np.float64)
        if values.size and not np.isfinite(values).all():
            raise InputError.one(path, "holds NaN or infinite values", field=name)
    if config.feature_std and (np.asarray(config.feature_std) <= 0).any():
        raise InputError.one(path, "standard deviations must be > 0", field="feature_std")


@torch.inference_mode()
def score_sequence(probe: Any, lm: Any, input_ids: Sequence[int]) -> torch.Tensor:
    """P(unsafe) at every position [seq] (float32, CPU) of one token sequence: one full forward of ``lm``
    (a ``LoadedModel``) without cache, read by ``probe.score_hidden_states`` (any object that has it)."""
    ids = torch.tensor([list(input_ids)], device=lm.device)
    out = lm.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    return probe.score_hidden_states(out.hidden_states)[0]


class LinearProbe:
    """A standardised logistic read-out with ``fit`` / ``predict_proba`` and a per-token streaming scorer."""

    def __init__(self, config: ProbeConfig, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        self.config = config
        n_layers, hidden = len(config.layers), config.hidden_size
        n_bias = 1 if config.combine == "concat" else n_layers
        self.weight = weight.float() if weight is not None else torch.zeros(n_layers, hidden)
        self.bias = bias.float() if bias is not None else torch.zeros(n_bias)
        if tuple(self.weight.shape) != (n_layers, hidden) or tuple(self.bias.shape) != (n_bias,):
            raise ValueError(
                f"weights {tuple(self.weight.shape)} / bias {tuple(self.bias.shape)} do not match "
                f"{n_layers} layers × hidden {hidden} ({config.combine})"
            )
        self._folded: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def layers(self) -> list[int]:
        return list(self.config.layers)

    def set_weights(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Replace the logistic weights (on standardised features)."""
        self.weight, self.bias = weight.detach().float(), bias.detach().float()
        self._folded = None

    # statistics -------------------------------------------------------------------------------------------
    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        n_layers, hidden = len(self.config.layers), self.config.hidden_size
        mean = torch.tensor(self.config.feature_mean) if self.config.feature_mean else torch.zeros(n_layers, hidden)
        std = torch.tensor(self.config.feature_std) if self.config.feature_std else torch.ones(n_layers, hidden)
        return mean.float(), std.float()

    def set_standardisation(self, features: torch.Tensor, sample_weight: torch.Tensor | None = None) -> None:
        """Store the (weighted) per-feature mean and standard deviation of ``features`` [N, L, H]."""
        w = torch.ones(len(features)) if sample_weight is None else sample_weight.float()
        w = (w / w.sum())[:, None, None]
        mean = (features * w).sum(0)
        std = ((features - mean) ** 2 * w).sum(0).sqrt().clamp_min(1e-4)
        self.config.feature_mean = mean.tolist()
        self.config.feature_std = std.tolist()
        self._folded = None

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        return (features - mean) / std

    # scoring ------------------------------------------------------------------------------------------------
    def logits_from_standardised(self, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Per-layer logits [N, L] (mean) or one logit [N, 1] (concat)."""
        per_layer = torch.einsum("nlh,lh->nl", z, weight)
        if self.config.combine == "concat":
            return per_layer.sum(1, keepdim=True) + bias
        return per_layer + bias

    def probabilities(self, per_layer: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """P(unsafe) from per-layer logits ``[..., layers]`` (without bias): ``concat`` adds them into one
        logit, ``mean`` averages the per-layer probabilities. The one combine step of every scoring path."""
        if self.config.combine == "concat":
            return torch.sigmoid(per_layer.sum(-1) + bias[0])
        return torch.sigmoid(per_layer + bias).mean(-1)

    def predict_proba(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """P(unsafe) for features [N, layers, hidden] (or [N, layers·hidden]; [N, hidden] for one layer)."""
        x = _as_3d(features, len(self.config.layers), self.config.hidden_size)
        with torch.no_grad():
            per_layer = torch.einsum("nlh,lh->nl", self.standardise(x), self.weight)
            return self.probabilities(per_layer, self.bias).numpy().astype(np.float64)

    def _folded_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights with standardisation folded in: ``logit = x·(w/σ) + (b − Σ μ·w/σ)``."""
        if self._folded is None:
            mean, std = self._stats()
            weight = self.weight / std
            shift = (mean * weight).sum(-1)
            bias = self.bias - shift.sum() if self.config.combine == "concat" else self.bias - shift
            self._folded = (weight, bias)
        return self._folded

    def score_hidden_states(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """P(unsafe) at every position [batch, seq] (float32, CPU) from a full HF ``hidden_states`` tuple.

        Every path that reads a model's hidden states goes through here: the guard's token loop, batched
        generation, the stream monitor, ``score_sequence`` (evaluation, traces). Cached features go through
        ``predict_proba``; both end in ``probabilities``."""
        weight, bias = self._folded_weights()
        if len(hidden_states) <= max(self.config.layers):
            raise ValueError(
                f"got {len(hidden_states)} hidden states but the probe reads layer {max(self.config.layers)}; "
                "pass the whole output_hidden_states tuple"
            )
        logits = []
        with torch.no_grad():
            for i, layer in enumerate(self.config.layers):
                state = hidden_states[layer]
                w = weight[i].to(state.device, torch.float32)
                logits.append(state.float() @ w)
            return self.probabilities(torch.stack(logits, -1).cpu(), bias)

    def new_smoother(self) -> Smoother:
        return make_smoother(self.config.smoother, self.config.smoother_params)

    def check_compatible(self, model_id: str, hidden_size: int) -> None:
        """Raise ProbeCompatibilityError unless the probe was trained on this model."""
        if model_id != self.config.model_id or hidden_size != self.config.hidden_size:
            raise ProbeCompatibilityError(
                f"this probe reads model {self.config.model_id!r} (hidden size {self.config.hidden_size}) "
                f"but is used with {model_id!r} (hidden size {hidden_size}); "
                f"train a probe for that model: cguard probe train --model {model_id} ..."
            )

    # training -----------------------------------------------------------------------------------------------
    def fit(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        sample_weight: np.ndarray | None = None,
        val_features: np.ndarray | None = None,
        val_labels: np.ndarray | None = None,
        val_weight: np.ndarray | None = None,
        **options: Any,
    ) -> LinearProbe:
        """Fit standardisation and weights (class-balanced, early-stopped on the validation features)."""
        fit_logistic(self, features, labels, sample_weight, val_features, val_labels, val_weight, **options)
        return self

    # persistence ----------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``probe.safetensors`` and ``probe_config.json`` atomically into ``path``."""
        with atomic_dir(path) as tmp:
            save_file({"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}, str(tmp / WEIGHTS_NAME))
            save_config(self.config, tmp / CONFIG_NAME)
        return Path(path)

    def save_config(self, path: str | Path) -> None:
        """Rewrite only ``probe_config.json`` (e.g. after recalibration)."""
        save_config(self.config, Path(path) / CONFIG_NAME)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, model_id: str | None = None, hidden_size: int | None = None
    ) -> LinearProbe:
        """Load a saved probe; with ``model_id`` / ``hidden_size`` it also checks the target model."""
        folder = Path(path)
        weights = folder / WEIGHTS_NAME
        if not weights.exists():
            raise InputError.one(folder, f"not a probe directory (no {WEIGHTS_NAME})")
        config = load_config(ProbeConfig, folder / CONFIG_NAME)
        check_statistics(config, folder / CONFIG_NAME)
        tensors = load_weights(weights)
        try:
            probe = cls(config, tensors["weight"], tensors["bias"])
        except ValueError as exc:
            raise InputError.one(weights, f"weights do not match {CONFIG_NAME}: {exc}") from exc
        if model_id is not None or hidden_size is not None:
            probe.check_compatible(
                model_id if model_id is not None else config.model_id,
                hidden_size if hidden_size is not None else config.hidden_size,
            )
        return probe


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
