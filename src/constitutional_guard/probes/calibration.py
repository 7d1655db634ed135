"""Streaming escalation: choose the smoother on validation and the escalation threshold on calibration.

An exchange escalates when its smoothed risk reaches the threshold at any response token; the threshold is
set for a target false-escalation rate on safe exchanges and reported with the recall on unsafe ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from constitutional_guard.metrics import auroc, threshold_at_fpr
from constitutional_guard.probes.smoothing import (
    default_candidates,
    describe,
    make_smoother,
    max_risk,
    single_spike_escalates,
    smooth,
)


@dataclass(frozen=True)
class EscalationMetrics:
    """How a smoother and threshold behave on the exchanges of one split."""

    n_safe: int
    n_unsafe: int
    threshold: float
    escalation_rate_safe: float | None
    """Safe exchanges escalated at some response token (false escalations)."""
    recall_unsafe: float | None
    """Unsafe exchanges escalated before the end of their response."""
    median_escalation_fraction: float | None
    """For escalated unsafe exchanges: median share of the response seen when escalation happened."""
    auroc: float | None
    """AUROC of each exchange's highest smoothed risk."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def first_escalation(smoothed: np.ndarray, threshold: float) -> int | None:
    """Index of the first token whose smoothed risk is ≥ threshold, or None."""
    hits = np.flatnonzero(smoothed >= threshold)
    return int(hits[0]) if len(hits) else None


def escalation_metrics(
    labels: Sequence[int], sequences: Sequence[np.ndarray], kind: str, params: dict[str, Any], threshold: float
) -> EscalationMetrics:
    """Escalation rate on safe exchanges and recall on unsafe ones, for per-token score sequences."""
    y = np.asarray(labels)
    smoother = make_smoother(kind, params)
    risks = max_risk(sequences, smoother)
    escalated = risks >= threshold
    fractions = []
    for seq, label in zip(sequences, y, strict=True):
        if label == 1 and len(seq):
            first = first_escalation(smooth(seq, smoother), threshold)
            if first is not None:
                fractions.append((first + 1) / len(seq))
    safe, unsafe = y == 0, y == 1
    return EscalationMetrics(
        n_safe=int(safe.sum()),
        n_unsafe=int(unsafe.sum()),
        threshold=float(threshold),
        escalation_rate_safe=float(escalated[safe].mean()) if safe.any() else None,
        recall_unsafe=float(escalated[unsafe].mean()) if unsafe.any() else None,
        median_escalation_fraction=float(np.median(fractions)) if fractions else None,
        auroc=auroc(y, risks),
    )


def calibrate_threshold(
    labels: Sequence[int], sequences: Sequence[np.ndarray], kind: str, params: dict[str, Any], target_rate: float
) -> float:
    """Lowest threshold whose false-escalation rate on the safe exchanges is ≤ ``target_rate``."""
    risks = max_risk(sequences, make_smoother(kind, params))
    return min(1.0, threshold_at_fpr(labels, risks, target_rate))


@dataclass(frozen=True)
class SmootherChoice:
    kind: str
    params: dict[str, Any]
    threshold: float
    """Chosen on the calibration split."""
    validation: list[dict[str, Any]]
    """Every candidate's validation recall at the target rate, best first."""
    calibration: EscalationMetrics


def choose_smoother(
    val_labels: Sequence[int],
    val_sequences: Sequence[np.ndarray],
    cal_labels: Sequence[int],
    cal_sequences: Sequence[np.ndarray],
    target_rate: float,
    candidates: Sequence[tuple[str, dict[str, Any]]] | None = None,
) -> SmootherChoice:
    """Rank smoothers by validation recall at ``target_rate`` false escalations; take the best whose
    calibration threshold a single spiky token (1.0 among zeros) cannot reach."""
    rows = []
    for kind, params in candidates or default_candidates():
        threshold = calibrate_threshold(val_labels, val_sequences, kind, params, target_rate)
        metrics = escalation_metrics(val_labels, val_sequences, kind, params, threshold)
        rows.append({"smoother": describe(kind, params), "kind": kind, "params": params, **metrics.as_dict()})
    rows.sort(key=lambda r: (-(r["recall_unsafe"] or 0.0), -(r["auroc"] or 0.0), r["median_escalation_fraction"] or 1))
    for row in rows:
        threshold = calibrate_threshold(cal_labels, cal_sequences, row["kind"], row["params"], target_rate)
        if single_spike_escalates(make_smoother(row["kind"], row["params"]), threshold):
            row["spike_safe"] = False
            continue
        row["spike_safe"] = True
        calibration = escalation_metrics(cal_labels, cal_sequences, row["kind"], row["params"], threshold)
        return SmootherChoice(row["kind"], row["params"], threshold, rows, calibration)
    raise ValueError("no candidate smoother resists a single spiky token; include k_consecutive with k ≥ 2")
