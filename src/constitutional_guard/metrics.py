"""Binary safety metrics: TPR / FPR / F1 / AUROC and thresholds chosen on calibration data.

Convention: label 1 = unsafe (positive), score = probability of unsafe; a score ≥ threshold flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

DEFAULT_FPR_TARGETS: tuple[float, ...] = (0.005, 0.01, 0.05)


@dataclass(frozen=True)
class BinaryMetrics:
    """The model-card table row for one dataset at one threshold."""

    n: int
    n_unsafe: int
    n_safe: int
    threshold: float | None
    """None when the items were judged at different thresholds (e.g. prompts vs exchanges)."""
    tpr: float | None
    """Unsafe recall; None when the set has no unsafe items."""
    missed_unsafe_rate: float | None
    fpr: float | None
    """Over-refusal on safe items; None when the set has no safe items."""
    precision: float | None
    f1: float | None
    auroc: float | None
    """None ("n/a") when the set has one class only."""

    def as_dict(self) -> dict:
        return asdict(self)


def _arrays(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.shape}) and scores ({s.shape}) differ in shape")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (safe) or 1 (unsafe)")
    return y, s


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    y, s = _arrays(labels, scores)
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, s))


def binary_metrics(
    labels: Sequence[int], scores: Sequence[float], threshold: float | Sequence[float], with_auroc: bool = True
) -> BinaryMetrics:
    """The table row at ``threshold``, one for all items or one per item; ``with_auroc=False`` skips the AUROC."""
    y, s = _arrays(labels, scores)
    t = np.asarray(threshold, dtype=float)
    if t.ndim and t.shape != s.shape:
        raise ValueError(f"per-item thresholds ({t.shape}) and scores ({s.shape}) differ in shape")
    pred = s >= t
    distinct = np.unique(t)
    pos, neg = y == 1, y == 0
    tp, fp = int((pred & pos).sum()), int((pred & neg).sum())
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    tpr = tp / n_pos if n_pos else None
    fpr = fp / n_neg if n_neg else None
    precision = tp / (tp + fp) if (tp + fp) else (None if not n_pos else 0.0)
    f1 = None
    if n_pos:
        f1 = 0.0 if not tp else 2 * tp / (2 * tp + fp + (n_pos - tp))
    return BinaryMetrics(
        n=len(y),
        n_unsafe=n_pos,
        n_safe=n_neg,
        threshold=float(distinct[0]) if len(distinct) == 1 else None,
        tpr=tpr,
        missed_unsafe_rate=None if tpr is None else 1.0 - tpr,
        fpr=fpr,
        precision=precision,
        f1=f1,
        auroc=auroc(y, s) if with_auroc else None,
    )


def threshold_at_fpr(labels: Sequence[int], scores: Sequence[float], target_fpr: float) -> float:
    """Smallest threshold whose false-positive rate on the safe items is ≤ ``target_fpr``.

    Flagging is ``score >= threshold``; the threshold is placed just above the safe score that
    would otherwise push the FPR over the target.
    """
    y, s = _arrays(labels, scores)
    safe = np.sort(s[y == 0])[::-1]
    if len(safe) == 0:
        raise ValueError("cannot choose a threshold at a target FPR without safe items")
    allowed = int(np.floor(target_fpr * len(safe) + 1e-9))  # safe items that may score ≥ threshold
    if allowed >= len(safe):
        return float(safe[-1])
    return float(np.nextafter(safe[allowed], np.inf))


def tpr_at_fpr(labels: Sequence[int], scores: Sequence[float], target_fpr: float) -> float | None:
    """Oracle TPR at a target FPR on one set (threshold chosen on the same data; label it so)."""
    y, s = _arrays(labels, scores)
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, s)
    return float(tpr[fpr <= target_fpr + 1e-12].max())


@dataclass(frozen=True)
class SweepRow:
    target_fpr: float
    threshold: float
    """Chosen on the calibration data."""
    test: BinaryMetrics
    """Applied to the test data."""


def threshold_sweep(
    calib_labels: Sequence[int],
    calib_scores: Sequence[float],
    test_labels: Sequence[int],
    test_scores: Sequence[float],
    targets: Sequence[float] = DEFAULT_FPR_TARGETS,
) -> list[SweepRow]:
    """For each target FPR: threshold chosen on calibration, TPR / FPR measured on test."""
    rows = []
    for target in targets:
        threshold = threshold_at_fpr(calib_labels, calib_scores, target)
        rows.append(SweepRow(target, threshold, binary_metrics(test_labels, test_scores, threshold)))
    return rows


CI_METRICS: tuple[str, ...] = ("tpr", "fpr", "f1", "auroc")


def bootstrap_cis(
    labels: Sequence[int],
    scores: Sequence[float],
    thresholds: Sequence[float | Sequence[float]],
    metrics: Sequence[str] = CI_METRICS,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> list[dict[str, tuple[float, float] | None]]:
    """Percentile bootstrap intervals of BinaryMetrics fields at several thresholds from the same resamples.

    A threshold is one number or one per item (resampled with the items). Returns one
    ``{metric: (low, high) or None}`` per threshold; None where no resample defines the metric
    (e.g. FPR on a set without safe items). AUROC is threshold-free, so its interval repeats on every row.
    """
    y, s = _arrays(labels, scores)
    rng = np.random.default_rng(seed)
    values: list[dict[str, list[float]]] = [{m: [] for m in metrics} for _ in thresholds]
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        yb, sb = y[idx], s[idx]
        area = auroc(yb, sb) if "auroc" in metrics else None
        for row, threshold in zip(values, thresholds, strict=True):
            t = np.asarray(threshold, dtype=float)
            point = binary_metrics(yb, sb, t[idx] if t.ndim else t, with_auroc=False).as_dict() | {"auroc": area}
            for metric in metrics:
                if point[metric] is not None:
                    row[metric].append(point[metric])
    out = []
    for row in values:
        out.append(
            {
                m: (float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))) if v else None
                for m, v in row.items()
            }
        )
    return out


def bootstrap_ci(
    labels: Sequence[int],
    scores: Sequence[float],
    threshold: float,
    metric: str,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of one BinaryMetrics field."""
    return bootstrap_cis(labels, scores, [threshold], [metric], n_boot, alpha, seed)[0][metric]


def proportion_ci(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (good on small sets and at 0 % or 100 %); None when n = 0."""
    if n == 0:
        return None
    z = float(norm.ppf(1 - alpha / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
