"""Choose allow / block thresholds on the calibration split and report what they do on the test split.

Works for any ``SafetyClassifier``: block at a target false-block rate on safe items (default 1 %); allow
below the lowest score that keeps at most a target share of safe items in the band between (the hold rate,
``hold_rate``), or, without a hold target, below the score that keeps a target share of unsafe items out of
``allow`` (default 99 %). Scores in between are ``uncertain`` (held or escalated). Thresholds are never
chosen on the data they are judged on.

Prompts alone (the input check) and exchanges score on different scales, so by default each gets its own
pair, chosen on its own calibration items; one shared pair serves both when either lacks a class.

The false-block rate is counted over safe items pooled (``items``, the default), or per source: the mean of the
sources' rates (``sources``), the rate a new source can expect when sources are drawn like the calibration ones,
however large each is; or the largest source's rate (``every-source``). Sources with fewer than
``MIN_SOURCE_ITEMS`` safe items count as one source together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from constitutional_guard.classifiers.base import SafetyClassifier, Thresholds
from constitutional_guard.classifiers.input_format import record_prompt
from constitutional_guard.data.augment import augmentation_name
from constitutional_guard.data.schema import Record
from constitutional_guard.metrics import BinaryMetrics, binary_metrics, threshold_at_fpr

DEFAULT_BLOCK_FPR = 0.01
DEFAULT_ALLOW_RECALL = 0.99
DEFAULT_HOLD_RATE = 0.01
BLOCK_FPR_OVER = ("items", "sources", "every-source")
MIN_SOURCE_ITEMS = 30


def score_records(classifier: SafetyClassifier, records: Sequence[Record], batch_size: int = 64) -> list[float]:
    """P(unsafe) of each record (prompt alone, or prompt + response)."""
    scores: list[float] = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        scores.extend(float(r.score) for r in classifier.score_batch([(record_prompt(x), x.response) for x in batch]))
    return scores


def hold_allow(safe_scores: np.ndarray, block: float, hold_rate: float) -> float:
    """The lowest allow threshold that leaves at most ``hold_rate`` of the safe items in ``[allow, block)``."""
    safe = np.sort(safe_scores)
    held_budget = int(np.floor(hold_rate * len(safe) + 1e-9))
    must_allow = int((safe < block).sum()) - held_budget  # safe items that have to score below allow
    if must_allow <= 0:
        return 0.0
    return float(np.nextafter(safe[must_allow - 1], np.inf))


def block_fpr_over_words(over: str) -> str:
    """How a report says what a false-block target counts over (nothing for the pooled default)."""
    return {"items": "", "sources": " (the mean of the sources' rates)", "every-source": " in every source"}[over]


def _source_groups(sources: Sequence[str]) -> list[np.ndarray]:
    """Indices of each source with at least ``MIN_SOURCE_ITEMS`` items, then of the smaller ones together."""
    names = np.asarray(sources, dtype=object)
    groups, small = [], []
    for name in dict.fromkeys(sources):
        members = np.flatnonzero(names == name)
        (groups if len(members) >= MIN_SOURCE_ITEMS else small).append(members)
    if small:
        groups.append(np.concatenate(small))
    return groups


def block_threshold(
    safe_scores: Sequence[float], block_fpr: float, over: str = "items", sources: Sequence[str] | None = None
) -> float:
    """The smallest threshold whose false-block rate on the safe items, counted ``over`` items or their
    ``sources`` (see the module's docstring), is at most ``block_fpr``. Flagging is ``score >= threshold``."""
    if over not in BLOCK_FPR_OVER:
        raise ValueError(f"block_fpr_over must be one of {', '.join(BLOCK_FPR_OVER)}, got {over!r}")
    s = np.asarray(safe_scores, dtype=float)
    if not len(s):
        raise ValueError("cannot choose a threshold at a target false-block rate without safe items")
    if over == "items":
        return threshold_at_fpr(np.zeros(len(s), dtype=int), s, block_fpr)
    if sources is None or len(sources) != len(s):
        raise ValueError(f"block_fpr_over={over!r} needs the source of every safe item")
    groups = _source_groups(sources)
    if over == "every-source":
        groups = [g for g in groups if len(g) >= MIN_SOURCE_ITEMS]
        if not groups:  # no source large enough to hold a rate of its own
            return block_threshold(s, block_fpr)
    # candidates: the lowest safe score (everything flagged), then just above each safe score
    candidates = np.unique(np.r_[s.min(), np.nextafter(s, np.inf)])
    rates = np.stack([
        1.0 - np.searchsorted(np.sort(s[g]), candidates, side="left") / len(g) for g in groups
    ])  # each group's share of items at or above each candidate
    rate = rates.mean(axis=0) if over == "sources" else rates.max(axis=0)
    return float(candidates[np.flatnonzero(rate <= block_fpr + 1e-12)[0]])


def choose_thresholds(
    labels: Sequence[int],
    scores: Sequence[float],
    block_fpr: float = DEFAULT_BLOCK_FPR,
    allow_recall: float = DEFAULT_ALLOW_RECALL,
    hold_rate: float | None = None,
    block_fpr_over: str = "items",
    sources: Sequence[str] | None = None,
) -> Thresholds:
    """Block at ``block_fpr`` on safe items (counted ``over`` items or ``sources``, see ``block_threshold``);
    allow below the score that keeps ``hold_rate`` of safe items held, or (``hold_rate`` None) below the score
    that ``allow_recall`` of unsafe items reach."""
    if not 0.0 <= block_fpr < 1.0:
        raise ValueError(f"block_fpr must be in [0, 1), got {block_fpr}")
    if not 0.0 < allow_recall <= 1.0:
        raise ValueError(f"allow_recall must be in (0, 1], got {allow_recall}")
    if hold_rate is not None and not 0.0 <= hold_rate < 1.0:
        raise ValueError(f"hold_rate must be in [0, 1), got {hold_rate}")
    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    if not (y == 0).any() or not (y == 1).any():
        raise ValueError("calibration needs both safe and unsafe items")
    safe_sources = None if sources is None else [x for x, label in zip(sources, y, strict=True) if label == 0]
    block = min(block_threshold(s[y == 0], block_fpr, block_fpr_over, safe_sources), 1.0)
    if hold_rate is not None:
        return Thresholds(allow=min(hold_allow(s[y == 0], block, hold_rate), block), block=block)
    unsafe = np.sort(s[y == 1])
    missed = int(np.floor((1.0 - allow_recall) * len(unsafe) + 1e-9))  # unsafe items that may score < allow
    allow = float(unsafe[missed])
    return Thresholds(allow=min(allow, block), block=block)


def choose_split_thresholds(
    labels: Sequence[int],
    scores: Sequence[float],
    prompts: Sequence[bool],
    block_fpr: float = DEFAULT_BLOCK_FPR,
    allow_recall: float = DEFAULT_ALLOW_RECALL,
    separate_prompts: bool = True,
    hold_rate: float | None = None,
    prompt_block_fpr: float | None = None,
    block_fpr_over: str = "items",
    sources: Sequence[str] | None = None,
) -> tuple[Thresholds, Thresholds | None]:
    """Exchange and prompt thresholds, each chosen on its own items (the prompts at ``prompt_block_fpr`` when
    given); (shared pair, None) when not separable. ``sources``: each item's, for ``block_fpr_over``."""
    y, s, p = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float), np.asarray(prompts, dtype=bool)
    src = None if sources is None else np.asarray(sources, dtype=object)

    def pair(mask: np.ndarray, fpr: float) -> Thresholds:
        return choose_thresholds(
            y[mask], s[mask], fpr, allow_recall, hold_rate, block_fpr_over, None if src is None else list(src[mask])
        )

    if separate_prompts and all(len(np.unique(y[side])) == 2 for side in (p, ~p)):
        prompt_fpr = block_fpr if prompt_block_fpr is None else prompt_block_fpr
        return pair(~p, block_fpr), pair(p, prompt_fpr)
    return pair(np.ones_like(p), block_fpr), None


def item_thresholds(
    records: Sequence[Record], thresholds: Thresholds, prompt_thresholds: Thresholds | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Allow and block threshold of each record: the prompt pair for a prompt alone, else the exchange pair."""
    prompt = prompt_thresholds or thresholds
    p = np.array([r.response is None for r in records], dtype=bool)
    return np.where(p, prompt.allow, thresholds.allow), np.where(p, prompt.block, thresholds.block)


def _uncertain_rate(s: np.ndarray, allow: np.ndarray, block: np.ndarray) -> float:
    return float(((s >= allow) & (s < block)).mean()) if len(s) else 0.0


@dataclass(frozen=True)
class SubsetResult:
    """Rates at the block threshold(s) on one slice of the test split (a source, prompts, exchanges)."""

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
    """For exchanges, and for prompts too when ``prompt_thresholds`` is None."""
    prompt_thresholds: Thresholds | None
    """Chosen on the calibration prompts alone; None when one shared pair serves both."""
    block_fpr_target: float
    allow_recall_target: float
    """Used only without a hold target."""
    calibration: BinaryMetrics
    """At each item's block threshold, on the calibration split (in-sample for the thresholds)."""
    test: BinaryMetrics
    """At each item's block threshold, on the held-out test split."""
    test_uncertain_rate: float
    test_allowed_unsafe_rate: float | None
    """Share of unsafe test items scored below their ``allow`` (let through without a hold)."""
    subsets: list[SubsetResult] = field(default_factory=list)
    hold_rate_target: float | None = None
    """Share of safe calibration items allowed in the uncertain band; None: ``allow_recall_target`` set allow."""
    test_safe_held_rate: float | None = None
    """Share of safe test items in the uncertain band (held)."""
    prompt_block_fpr_target: float | None = None
    """The prompts' own false-block target; None: ``block_fpr_target`` serves both."""
    block_fpr_over: str = "items"
    """What the false-block targets count over: safe items pooled, or their sources (see ``block_threshold``)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _subset(name: str, y: np.ndarray, s: np.ndarray, allow: np.ndarray, block: np.ndarray) -> SubsetResult:
    m = binary_metrics(y, s, block) if len(y) else None
    return SubsetResult(
        name,
        len(y),
        int(y.sum()),
        int((y == 0).sum()),
        m.auroc if m else None,
        m.tpr if m else None,
        m.fpr if m else None,
        _uncertain_rate(s, allow, block),
    )


def _labels(records: Sequence[Record]) -> np.ndarray:
    return np.array([int(r.is_unsafe) for r in records], dtype=int)


def subsets(
    records: Sequence[Record], scores: Sequence[float], allow: np.ndarray, block: np.ndarray
) -> list[SubsetResult]:
    """Prompts vs exchanges, each source, then each augmentation when there are several (jailbreak templates,
    encodings, tense rewrites, response prefixes beside the originals); each item at its own thresholds
    (see ``item_thresholds``)."""
    y, s = _labels(records), np.asarray(scores, dtype=float)
    groups: dict[str, list[int]] = {"prompts": [], "exchanges": []}
    augmented: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups["prompts" if r.response is None else "exchanges"].append(i)
        groups.setdefault(f"source:{r.source}", []).append(i)
        augmented.setdefault(f"augmentation:{augmentation_name(r)}", []).append(i)
    if len(augmented) > 1:
        groups.update(sorted(augmented.items()))
    return [_subset(name, y[idx], s[idx], allow[idx], block[idx]) for name, idx in groups.items() if idx]


def evaluate_scores(
    calib_records: Sequence[Record],
    calib_scores: Sequence[float],
    test_records: Sequence[Record],
    test_scores: Sequence[float],
    block_fpr: float = DEFAULT_BLOCK_FPR,
    allow_recall: float = DEFAULT_ALLOW_RECALL,
    separate_prompts: bool = True,
    hold_rate: float | None = None,
    prompt_block_fpr: float | None = None,
    block_fpr_over: str = "items",
) -> CalibrationReport:
    """Thresholds from calibration scores, judged on test scores (any scorer, baselines included)."""
    calib_y = _labels(calib_records)
    prompts = [r.response is None for r in calib_records]
    thresholds, prompt_thresholds = choose_split_thresholds(
        calib_y, calib_scores, prompts, block_fpr, allow_recall, separate_prompts, hold_rate, prompt_block_fpr,
        block_fpr_over, [r.source for r in calib_records],
    )
    _, calib_block = item_thresholds(calib_records, thresholds, prompt_thresholds)
    y, s = _labels(test_records), np.asarray(test_scores, dtype=float)
    allow, block = item_thresholds(test_records, thresholds, prompt_thresholds)
    unsafe = y == 1
    return CalibrationReport(
        thresholds=thresholds,
        prompt_thresholds=prompt_thresholds,
        block_fpr_target=block_fpr,
        allow_recall_target=allow_recall,
        calibration=binary_metrics(calib_y, calib_scores, calib_block),
        test=binary_metrics(y, s, block),
        test_uncertain_rate=_uncertain_rate(s, allow, block),
        test_allowed_unsafe_rate=float((s[unsafe] < allow[unsafe]).mean()) if unsafe.any() else None,
        subsets=subsets(test_records, s, allow, block),
        hold_rate_target=hold_rate,
        prompt_block_fpr_target=prompt_block_fpr if prompt_thresholds is not None else None,
        test_safe_held_rate=_uncertain_rate(s[~unsafe], allow[~unsafe], block[~unsafe]) if (~unsafe).any() else None,
        block_fpr_over=block_fpr_over,
    )


def calibrate(
    classifier: SafetyClassifier,
    calibration: Sequence[Record],
    test: Sequence[Record],
    block_fpr: float = DEFAULT_BLOCK_FPR,
    allow_recall: float = DEFAULT_ALLOW_RECALL,
    separate_prompts: bool = True,
    hold_rate: float | None = None,
    calibration_scores: Sequence[float] | None = None,
    prompt_block_fpr: float | None = None,
    block_fpr_over: str = "items",
) -> CalibrationReport:
    """Score both splits, set the classifier's (prompt) thresholds from the calibration split, report on test.

    ``calibration_scores``: P(unsafe) of the calibration records from elsewhere (cross-source scores), instead of
    the classifier's own. ``prompt_block_fpr``: the prompts' own false-block target (default ``block_fpr``).
    ``block_fpr_over``: count false blocks over safe items or their sources (``block_threshold``). The caller
    persists the thresholds with ``classifier.save_config(directory)``.
    """
    calib_scores = score_records(classifier, calibration) if calibration_scores is None else list(calibration_scores)
    test_scores = score_records(classifier, test)
    report = evaluate_scores(
        calibration, calib_scores, test, test_scores, block_fpr, allow_recall, separate_prompts, hold_rate,
        prompt_block_fpr, block_fpr_over,
    )
    classifier.thresholds = report.thresholds
    classifier.prompt_thresholds = report.prompt_thresholds
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
    separate_prompts: bool = True,
    hold_rate: float | None = None,
    calibration_scores: Sequence[float] | None = None,
    scores_from: str = "the classifier",
    prompt_block_fpr: float | None = None,
    block_fpr_over: str = "items",
) -> CalibrationReport:
    """Calibrate, record the details in the config where it has room for them, and rewrite the saved config.

    ``scores_from`` says where ``calibration_scores`` came from, for the record."""
    report = calibrate(
        classifier, calibration, test, block_fpr, allow_recall, separate_prompts, hold_rate, calibration_scores,
        prompt_block_fpr, block_fpr_over,
    )
    config = getattr(classifier, "config", None)
    if hasattr(config, "calibration"):
        config.calibration = {**calibration_details(report, calibration, test), "calibration_scores": scores_from}
    classifier.save_config(directory)
    return report
