"""Choose allow / block thresholds on the calibration split and report what they do on the test split.

Works for any ``SafetyClassifier``: block at a target false-block rate on safe items (default 1 %), allow
below the score that keeps a target share of unsafe items out of ``allow`` (default 99 %); scores in
between are ``uncertain`` (held or escalated). Thresholds are never chosen on the data they are judged on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from constitutional_guard.classifiers.base import SafetyClassifier, Thresholds
from constitutional_guard.classifiers.input_format import record_prompt
from constitutional_guard.data.schema import Record
from constitutional_guard.evaluation.metrics import BinaryMetrics, binary_metrics, threshold_at_fpr

DEFAULT_BLOCK_FPR = 0.01
DEFAULT_ALLOW_RECALL = 0.99


def score_records(classifier: SafetyClassifier, records: Sequence[Record], batch_size: int = 64) -> list[float]:
    """P(unsafe) of each record (prompt alone, or prompt + response)."""
    scores: list[float] = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        scores.extend(r.score for r in classifier.score_batch([(record_prompt(x), x.response) for x in batch]))
    return scores


def choose_thresholds(
    labels: Sequence[int],
    scores: Sequence[float],
    block_fpr: float = DEFAULT_BLOCK_FPR,
    allow_recall: float = DEFAULT_ALLOW_RECALL,
) -> Thresholds:
    """Block at ``block_fpr`` on safe items; allow below the score that ``allow_recall`` of unsafe items reach."""
    if not 0.0 <= block_fpr < 1.0:
        raise ValueError(f"block_fpr must be in [0, 1), got {block_fpr}")
    if not 0.0 < allow_recall <= 1.0:
        raise ValueError(f"allow_recall must be in (0, 1], got {allow_recall}")
    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    if not (y == 0).any() or not (y == 1).any():
        raise ValueError("calibration needs both safe and unsafe items")
    block = min(threshold_at_fpr(y, s, block_fpr), 1.0)
    unsafe = np.sort(s[y == 1])
    missed = int(np.floor((1.0 - allow_recall) * len(unsafe) + 1e-9))  # unsafe items that may score < allow
    allow = float(unsafe[missed])
    return Thresholds(allow=min(allow, block), block=block)


@dataclass(frozen=True)
class SubsetResult:
    """Rates at the block threshold on one slice of the test split (a source, prompts, exchanges)."""

    name: str
    n: int
    n_unsafe: int
    n_safe: int
    auroc: float | None
    tpr: float | None
    fpr: float | None
    uncertain_rate: float


@dataclass(frozen=True)
class CalibrationReport:
    thresholds: Thresholds
    block_fpr_target: float
    allow_recall_target: float
    calibration: BinaryMetrics
    """At the block threshold, on the calibration split (in-sample for the threshold)."""
    test: BinaryMetrics
    """At the block threshold, on the held-out test split."""
    test_uncertain_rate: float
    test_allowed_unsafe_rate: float | None
    """Share of unsafe test items scored below ``allow`` (let through without a hold)."""
    subsets: list[SubsetResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _subset(name: str, y: np.ndarray, s: np.ndarray, thresholds: Thresholds) -> SubsetResult:
    m = binary_metrics(y, s, thresholds.block) if len(y) else None
    uncertain = float(((s >= thresholds.allow) & (s < thresholds.block)).mean()) if len(y) else 0.0
    return SubsetResult(
        name,
        len(y),
        int(y.sum()),
        int((y == 0).sum()),
        m.auroc if m else None,
        m.tpr if m else None,
        m.fpr if m else None,
        uncertain,
    )


def subsets(records: Sequence[Record], scores: Sequence[float], thresholds: Thresholds) -> list[SubsetResult]:
    """Prompts vs exchanges, then each source, at the given thresholds."""
    y = np.array([int(r.is_unsafe) for r in records], dtype=int)
    s = np.asarray(scores, dtype=float)
    groups: dict[str, list[int]] = {"prompts": [], "exchanges": []}
    for i, r in enumerate(records):
        groups["exchanges" if r.response else "prompts"].append(i)
        groups.setdefault(f"source:{r.source}", []).append(i)
    return [_subset(name, y[idx], s[idx], thresholds) for name, idx in groups.items() if idx]


def evaluate_scores(
    calib_labels: Sequence[int],
    calib_scores: Sequence[float],
    test_records: Sequence[Record],
    test_scores: Sequence[float],
    block_fpr: float = DEFAULT_BLOCK_FPR,
    allow_recall: float = DEFAULT_ALLOW_RECALL,
) -> CalibrationReport:
    """Thresholds from calibration scores, judged on test scores (any scorer, baselines included)."""
    thresholds = choose_thresholds(calib_labels, calib_scores, block_fpr, allow_recall)
    y = np.array([int(r.is_unsafe) for r in test_records], dtype=int)
    s = np.asarray(test_scores, dtype=float)
    unsafe = s[y == 1]
    return CalibrationReport(
        thresholds=thresholds,
        block_fpr_target=block_fpr,
        allow_recall_target=allow_recall,
        calibration=binary_metrics(calib_labels, calib_scores, thresholds.block),
        test=binary_metrics(y, s, thresholds.block),
        test_uncertain_rate=float(((s >= thresholds.allow) & (s < thresholds.block)).mean()) if len(s) else 0.0,
        test_allowed_unsafe_rate=float((unsafe < thresholds.allow).mean()) if len(unsafe) else None,
        subsets=subsets(test_records, s, thresholds),
    )


def calibrate(
    classifier: SafetyClassifier,
    calibration: Sequence[Record],
    test: Sequence[Record],
    block_fpr: float = DEFAULT_BLOCK_FPR,
    allow_recall: float = DEFAULT_ALLOW_RECALL,
) -> CalibrationReport:
    """Score both splits, set ``classifier.thresholds`` from the calibration split and report on test.

    The caller persists the thresholds with ``classifier.save_config(directory)``.
    """
    calib_scores = score_records(classifier, calibration)
    test_scores = score_records(classifier, test)
    calib_labels = [int(r.is_unsafe) for r in calibration]
    report = evaluate_scores(calib_labels, calib_scores, test, test_scores, block_fpr, allow_recall)
    classifier.thresholds = report.thresholds
    return report


def calibration_details(report: CalibrationReport, calibration: Sequence[Record], test: Sequence[Record]) -> dict:
    """Where thresholds came from: data sizes, targets and metrics, as stored in a classifier's config."""
    return {"calibration_records": len(calibration), "test_records": len(test), **report.as_dict()}


def calibrate_and_save(
    classifier: SafetyClassifier,
    directory: str | Path,
    calibration: Sequence[Record],
    test: Sequence[Record],
    block_fpr: float = DEFAULT_BLOCK_FPR,
    allow_recall: float = DEFAULT_ALLOW_RECALL,
) -> CalibrationReport:
    """Calibrate, record the details in the config where it has room for them, and rewrite the saved config."""
    report = calibrate(classifier, calibration, test, block_fpr, allow_recall)
    config = getattr(classifier, "config", None)
    if hasattr(config, "calibration"):
        config.calibration = calibration_details(report, calibration, test)
    classifier.save_config(directory)
    return report
